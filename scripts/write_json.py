"""A rule's `params.value` written as JSON to its output (Snakemake `script:`): settings derived from the config
that a stage reads from a file, rather than from a command line that Snakemake echoes into every log."""

import json
import logging

from pipeline.durable import atomic_output

snakemake = globals()["snakemake"]  # set by Snakemake's script preamble
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
with atomic_output(snakemake.output[0]) as out:
    json.dump(snakemake.params.value, out, indent=1)  # keys unsorted: tables list their entries in config order
    out.write("\n")
logging.info("wrote %s", snakemake.output[0])
