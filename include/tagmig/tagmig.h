/* SPDX-License-Identifier: MIT */
/* tagmig: live migration of guest RAM and its memory tags over parallel channels. */
#pragma once

#include "error.h"
#include "kvm-mte.h"
#include "ram.h"
#include "session.h"
#include "tagstore.h"
#include "version.h"
#include "wire.h"
