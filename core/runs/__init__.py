"""The run machinery of the certify family (certify.py, predict_ddpm.py, predict_mdds.py, analyze.py):
flags (``parsers``), job set-up (``setup``, ``loaders``, ``speed``), the per-example loop (``loop``), its
files (``files``, ``shards``, ``predict``), summaries (``analysis``) and the black-box files
(``blackbox``). It sits above the papers (core/*.py), ``models`` and ``datasets``; see docs/ARCHITECTURE.md."""
