"""The wheel is self-contained: built, installed into a fresh virtualenv outside the checkout, it
ships its configs and `kerasseg fit` / `kerasseg export` run from there.

The virtualenv sees the system site (TensorFlow etc.), which also holds the developers' editable
kerasseg install. So the venv's kerasseg must be the wheel's: it is force-installed into the venv,
a ``sitecustomize`` in the venv drops the editable install's import finder and any path inside the
checkout (a file missing from the wheel then fails instead of being found in the checkout), and the
test asserts that kerasseg, kerasseg.cli and the configs load from the venv.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import REPO


pytestmark = pytest.mark.slow  # builds a wheel, makes a venv, trains 1 epoch and exports: ~1 min

#: Not copied into the build tree: VCS data, build outputs and run folders.
_IGNORE = shutil.ignore_patterns(".git", "build", "dist", "runs", "*.egg-info", "__pycache__", "*.pyc",
                                 ".pytest_cache", ".whl", ".gl")

SITECUSTOMIZE = '''\
"""Test venv: import kerasseg from the wheel only, never from the checkout {repo!r}."""
import sys
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path_hooks[:] = [h for h in sys.path_hooks if not getattr(h, "__module__", "").startswith("__editable__")]
sys.path[:] = [p for p in sys.path if not (p == "" or p == {repo!r} or p.startswith({repo!r} + "/"))]
'''

PROBE = """\
import json, kerasseg, kerasseg.cli.main, kerasseg.config as c
print(json.dumps({"kerasseg": kerasseg.__file__, "cli": kerasseg.cli.main.__file__,
                  "config_dir": str(c.CONFIG_DIR), "names": c.list_configs(),
                  "yaml": sorted(p.name for p in c.CONFIG_DIR.glob("*.yaml"))}))
"""


def _env(venv: Path) -> dict:
    """The environment without anything that could put the checkout on sys.path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               PYTHONNOUSERSITE="1", PYTHONSAFEPATH="1", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def _run(args, cwd, env, timeout=600):
    res = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, args))} -> exit {res.returncode}\n" \
                                f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _inside(path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def test_wheel_in_fresh_venv_fits_and_exports(tmp_path):
    # Build from a copy of the source tree, so the checkout gets no build/ folder (whose stale
    # files could end up in a later wheel) and parallel runs do not share one.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=_IGNORE)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", wheels, src], cwd=tmp_path, env=_env(tmp_path / "none"))
    (wheel,) = wheels.glob("kerasseg-*.whl")

    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"kerasseg", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops
    assert "kerasseg/configs/__init__.py" in names and "kerasseg/cli/main.py" in names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=tmp_path, env=_env(venv))
    py = venv / "bin" / "python"
    site = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=tmp_path, env=_env(venv)).stdout.strip()
    assert _inside(site, venv), site
    (Path(site) / "sitecustomize.py").write_text(SITECUSTOMIZE.format(repo=str(REPO.resolve())))
    if sys.prefix != sys.base_prefix:
        # the tests run inside a virtualenv (the README's way to install): --system-site-packages
        # gives the base interpreter's site, which lacks the venv's TensorFlow etc.; add the running
        # venv's site folders as plain paths (their .pth files, e.g. the editable kerasseg, are not run)
        import site as site_mod

        parents = [p for p in site_mod.getsitepackages() if not _inside(p, venv)]
        (Path(site) / "_kerasseg_test_parent_env.pth").write_text("\n".join(parents) + "\n")
    env = _env(venv)
    _run([py, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", wheel],
         cwd=tmp_path, env=env)

    work = tmp_path / "work"
    work.mkdir()
    info = json.loads(_run([py, "-c", PROBE], cwd=work, env=env).stdout.strip().splitlines()[-1])
    for key in ("kerasseg", "cli", "config_dir"):
        assert _inside(info[key], venv) and not _inside(info[key], REPO), (key, info[key])
    repo_yaml = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
    assert info["yaml"] == repo_yaml
    assert info["names"] == sorted(Path(n).stem for n in repo_yaml if not n.startswith("_"))

    kerasseg = venv / "bin" / "kerasseg"
    _run([kerasseg, "fit", "crunet-unet", "--epochs", "1", "--out", "run"], cwd=work, env=env)
    assert (work / "run" / "model.keras").is_file()
    _run([kerasseg, "export", "run", "--out", "export/crunet"], cwd=work, env=env)
    assert (work / "export" / "crunet" / "1" / "saved_model.pb").is_file()
