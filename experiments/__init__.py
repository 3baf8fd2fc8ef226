"""Studies that need code beyond configuration: `experiments/<experiment>.py` with `summarize(run_dir)`.

The runner calls `summarize` after the sweep's tables are written; it reads them from run_dir,
writes its own files there and returns text to print.
"""
