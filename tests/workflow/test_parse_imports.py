"""What Snakemake imports to parse the DAG stays light: no torch (seconds per start)."""

from __future__ import annotations

import subprocess
import sys


def test_parsing_the_workflow_and_method_presets_does_not_import_torch():
    code = (
        "import sys\n"
        "from calibadv import methods\n"
        "from calibadv.workflow import job_inputs, judge, layout, resources, run_specs, runs\n"
        "from calibadv.workflow import schema, sources, validation\n"
        "cfg = validation.load_config('config/tiny.yaml')\n"
        "for model, method in runs.runs(cfg):\n"
        "    run_specs.run_spec_dict(cfg, model, method)\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
