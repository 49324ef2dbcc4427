# Stage 4: NATv2 post-processing, one job per fixed rank slot 0..finetune.slots-1.

FINAL_ROUND = f"{RES}/search/round_{ROUNDS:02d}"


rule finetune:
    input:
        f"{FINAL_ROUND}/archive.csv",
        f"{FINAL_ROUND}/supernet.pt",
    output:
        rank_outputs(RES, "{n}"),
    wildcard_constraints:
        n=r"\d+",
    params:
        config_keys=stage_params(CFG, "finetune"),
    log:
        "logs/finetune_{n}.log",
    benchmark:
        "logs/benchmarks/finetune_{n}.tsv"
    threads: CFG["threads"]
    resources:
        mem_mb=8000,
        runtime=12 * 60,
        gpu=GPU,
    shell:
        f"natv2 finetune --rank {{wildcards.n}} {CONFIG_ARGS} 2>&1 | tee {{log}}"
