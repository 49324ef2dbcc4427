# Stages 2-3: the initial archive (round 0) and the search rounds 1..search.rounds. With
# search.shards > 1 a round is scattered: propose candidates, evaluate shards in parallel jobs,
# gather (update the archive, adapt the super-network, re-evaluate).

ROUND = r"(0[1-9]|[1-9][0-9])"
ROUND_FILES = ("archive.csv", "candidates.csv", "stats.json", "supernet.pt")


rule init_archive:
    input:
        f"{RES}/supernet/supernet.pt",
    output:
        f"{RES}/search/round_00/archive.csv",
        f"{RES}/search/round_00/evaluated.csv",
        f"{RES}/search/round_00/stats.json",
    params:
        config_keys=stage_params(CFG, "init_archive"),
    log:
        "logs/init_archive.log",
    benchmark:
        "logs/benchmarks/init_archive.tsv"
    threads: CFG["threads"]
    resources:
        mem_mb=8000,
        runtime=12 * 60,
        gpu=GPU,
    shell:
        f"natv2 init-archive {CONFIG_ARGS} 2>&1 | tee {{log}}"


if SHARDS == 1:

    rule search_round:
        input:
            lambda wc: round_inputs(RES, int(wc.k)),
        output:
            [f"{RES}/search/round_{{k}}/{name}" for name in ROUND_FILES],
        wildcard_constraints:
            k=ROUND,
        params:
            config_keys=stage_params(CFG, "search_round"),
            k=lambda wc: int(wc.k),
        log:
            "logs/search_round_{k}.log",
        benchmark:
            "logs/benchmarks/search_round_{k}.tsv"
        threads: CFG["threads"]
        resources:
            mem_mb=8000,
            runtime=12 * 60,
            gpu=GPU,
        shell:
            f"natv2 search-round --round {{params.k}} {CONFIG_ARGS} 2>&1 | tee {{log}}"

else:

    rule search_propose:
        input:
            lambda wc: round_inputs(RES, int(wc.k)),
        output:
            f"{RES}/search/round_{{k}}/proposed.csv",
            f"{RES}/search/round_{{k}}/proposed.json",
        wildcard_constraints:
            k=ROUND,
        params:
            config_keys=stage_params(CFG, "search_round"),
            k=lambda wc: int(wc.k),
        log:
            "logs/search_propose_{k}.log",
        benchmark:
            "logs/benchmarks/search_propose_{k}.tsv"
        threads: CFG["threads"]
        resources:
            mem_mb=8000,
            runtime=4 * 60,
            gpu=0,
        shell:
            f"natv2 search-round --round {{params.k}} --step propose {CONFIG_ARGS} 2>&1 | tee {{log}}"

    rule search_evaluate:
        input:
            f"{RES}/search/round_{{k}}/proposed.csv",
            lambda wc: round_inputs(RES, int(wc.k))[2],
        output:
            f"{RES}/search/round_{{k}}/shard_{{i}}.csv",
        wildcard_constraints:
            k=ROUND,
            i=r"\d+",
        params:
            config_keys=stage_params(CFG, "search_round"),
            k=lambda wc: int(wc.k),
        log:
            "logs/search_evaluate_{k}_{i}.log",
        benchmark:
            "logs/benchmarks/search_evaluate_{k}_{i}.tsv"
        threads: CFG["threads"]
        resources:
            mem_mb=8000,
            runtime=4 * 60,
            gpu=GPU,
        shell:
            f"natv2 search-round --round {{params.k}} --step evaluate --shard {{wildcards.i}} {CONFIG_ARGS} 2>&1 | tee {{log}}"

    rule search_finish:
        input:
            lambda wc: round_inputs(RES, int(wc.k)),
            f"{RES}/search/round_{{k}}/proposed.csv",
            f"{RES}/search/round_{{k}}/proposed.json",
            [f"{RES}/search/round_{{k}}/shard_{i}.csv" for i in range(SHARDS)],
        output:
            [f"{RES}/search/round_{{k}}/{name}" for name in ROUND_FILES],
        wildcard_constraints:
            k=ROUND,
        params:
            config_keys=stage_params(CFG, "search_round"),
            k=lambda wc: int(wc.k),
        log:
            "logs/search_finish_{k}.log",
        benchmark:
            "logs/benchmarks/search_finish_{k}.tsv"
        threads: CFG["threads"]
        resources:
            mem_mb=8000,
            runtime=12 * 60,
            gpu=GPU,
        shell:
            f"natv2 search-round --round {{params.k}} --step finish {CONFIG_ARGS} 2>&1 | tee {{log}}"
