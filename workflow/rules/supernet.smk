# Stage 1: train, download or load the super-network (natv2 supernet).


rule supernet:
    output:
        f"{RES}/supernet/supernet.pt",
        f"{RES}/supernet/supernet.json",
    params:
        config_keys=stage_params(CFG, "supernet"),
    log:
        "logs/supernet.log",
    benchmark:
        "logs/benchmarks/supernet.tsv"
    threads: CFG["threads"]
    resources:
        mem_mb=8000,
        runtime=24 * 60,
        gpu=GPU,
    shell:
        f"natv2 supernet {CONFIG_ARGS} 2>&1 | tee {{log}}"
