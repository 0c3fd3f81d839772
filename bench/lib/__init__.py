"""bench/lib: the modules of bench/run (see bench/README.md, "Files").

No module keeps state: what a run knows (the tagmig binary, its work directory, the processes it
started, the QEMU accelerator) lives in objects that bench/run makes and passes down.
"""
