# One rule per job of the stage graph (natv2/pipeline/dag.py, which also writes dvc.yaml): its
# files, the config keys it depends on and the natv2 command that runs it. Nothing here knows a
# path or a stage of its own, so Snakemake and DVC cannot drift apart.

for _stage in STAGES:

    rule:
        name:
            _stage.name
        input:
            **named(_stage.deps),
        output:
            **named(_stage.outs + _stage.metrics + _stage.plots),
        params:
            config_keys=stage_params(CFG, _stage.keys),
            # the stage's natv2 arguments; a directive's value is fixed here, while the shell
            # string is formatted when the job runs (after the loop, so it must not read _stage)
            args=" ".join(_stage.args),
        log:
            f"logs/{_stage.name}.log",
        benchmark:
            f"logs/benchmarks/{_stage.name}.tsv"
        threads: threads_of(_stage.kind)
        resources:
            **resources_of(_stage.kind),
        shell:
            # natv2, or torchrun starting natv2 for a data-parallel training job
            f"{' '.join(launcher(_stage, PROCESSES))} {{params.args}} {CONFIG_ARGS} 2>&1 | tee {{log}}"
