# natv2 workflow: each rule is a thin call into `natv2 <stage>`; see workflow/rules/*.smk.
# The config is validated (and defaults filled) against the same schema the CLI uses.
from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml", set_default=True)

RESULTS = config["results_dir"]


rule all:
    default_target: True
    input:
        [],
