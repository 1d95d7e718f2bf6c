"""The shipped training configs, one YAML per table row of both papers plus the ``_*.yaml`` bases.

Kept at the top-level ``configs/`` folder of the repository and installed as the package
``kerasseg.configs`` (setup.cfg ``package_dir``/``package_data``), so a wheel carries them;
:mod:`kerasseg.config` finds them with ``importlib.resources.files("kerasseg.configs")``.
"""
