# Stage 5: the HTML report, DVC metrics (metrics.json) and plot data (pareto.csv).


rule report:
    input:
        report_inputs(RES, ROUNDS, SLOTS),
    output:
        [f"{RES}/report/{name}" for name in REPORT_FILES],
        f"{RES}/report/metrics.json",
        f"{RES}/report/pareto.csv",
    params:
        config_keys=stage_params(CFG, "report"),
    log:
        "logs/report.log",
    benchmark:
        "logs/benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=0,
    shell:
        f"natv2 report {CONFIG_ARGS} 2>&1 | tee {{log}}"
