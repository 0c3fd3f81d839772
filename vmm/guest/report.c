/* Text to the report port: each byte is one 32-bit store of its code to the port's address, the
 * access QEMU's PL011 data register takes and one MMIO exit for a VMM (a plain STR without
 * writeback, so that KVM can decode it: ESR_EL2.ISV = 1). Lines end with "\n". */
#include "guest.h"

static void put(char c)
{
	volatile uint32_t *port = (volatile uint32_t *)tm_guest_params.port;
	__asm__ volatile("str %w0, [%1]" : : "r"((uint32_t)(unsigned char)c), "r"(port) : "memory");
}

void report_str(const char *s)
{
	while (*s)
		put(*s++);
}

void report_hex(uint64_t v)
{
	char buf[19];
	int n = 0;
	do {
		buf[n++] = "0123456789abcdef"[v & 0xf];
		v >>= 4;
	} while (v);
	put('0');
	put('x');
	while (n)
		put(buf[--n]);
}

void report_dec(uint64_t v)
{
	char buf[21];
	int n = 0;
	do {
		buf[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		put(buf[--n]);
}

void report_line_end(void)
{
	put('\n');
}
