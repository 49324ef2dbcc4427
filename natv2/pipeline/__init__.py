"""One function per stage: (config, input files) -> output files, written atomically.

``supernet_stage.run_supernet``, ``search_stage.run_init_archive`` / ``run_search_round`` (and the
scatter/gather steps), ``finetune_stage.run_finetune``, ``report_stage.run_report``.
"""
