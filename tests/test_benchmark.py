"""scripts/benchmark.py through its main(argv): a subset runs in this process and writes its table (numbers not
judged: speed claims are ratios the benchmark prints, never timed tests)."""

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ava_subset_writes_its_row(tmp_path, capsys):
    main = runpy.run_path(str(ROOT / "scripts" / "benchmark.py"))["main"]
    out = tmp_path / "bench.md"
    assert main(["--tiny", "--only", "ava", "--ava-rows", "2000", "--out", str(out), "--data-dir", str(tmp_path)]) == 0
    text = out.read_text()
    assert "| AVA frame-mAP, 2,000 detections, 100 boxes |" in text and "(same mAP: True)" in text
    assert "peak memory" not in text and "wrote" in capsys.readouterr().out
