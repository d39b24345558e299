"""The cutter side of the converter never imports TensorFlow or Keras."""

from __future__ import annotations

import subprocess
import sys


def test_cutter_imports_without_tensorflow() -> None:
    code = (
        "import sys\n"
        "import splitmq.converter\n"
        "from splitmq.converter import cutter, graph, manifest, pool, runner, analysis, report\n"
        "from splitmq.converter import branches\n"
        "from splitmq.converter import isolated, worker, digits, evaluate, task\n"
        "from splitmq.converter import cut, load_manifest, convert\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "", f"TensorFlow/Keras imported: {result.stdout}"
