"""Evaluation: benchmarks (:mod:`.benchmarks`), the concurrent, resumable runner (:mod:`.runner`), reports
(:mod:`.report`) and the ``mira eval`` command (:mod:`.commands`). Nothing heavy is imported here."""
