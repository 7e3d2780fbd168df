"""What `pip install .` gives users: a wheel that carries the schema, a Dockerfile that runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_schema_identical_to_the_repository_copy(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, timeout=120)
    (wheel,) = tmp_path.glob("mcpgw-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = json.loads(archive.read("gateway/schemas/mcpgw.schema.json"))
        entry_points = archive.read(next(n for n in archive.namelist() if n.endswith("entry_points.txt"))).decode()
    assert shipped == json.loads((ROOT / "schemas" / "mcpgw.schema.json").read_text())
    assert "mcpgw = gateway.cli:main" in entry_points


def test_dockerfile_runs_mcpgw_as_non_root_on_the_mounted_config() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert sum(line.startswith("FROM ") for line in lines) >= 2, "multi-stage build"
    user = next(line for line in reversed(lines) if line.startswith("USER "))
    assert user.split()[1] not in ("root", "0")
    assert 'ENTRYPOINT ["mcpgw"]' in lines
    assert 'CMD ["serve", "/config/proxy.yaml"]' in lines
    assert 'RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[redis]"' in lines  # replicas share limits
