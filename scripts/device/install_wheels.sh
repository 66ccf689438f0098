# Source this (`. scripts/device/install_wheels.sh`) on a device machine, from the repository
# root: installs the carried wheels in .whl/ (the project's dependencies that machine lacks;
# see run_digits.sh for the list and how they were fetched) into a fresh /tmp/site, checks
# them against what is installed, and puts /tmp/site first on PYTHONPATH. Returns 2, with a
# message, when .whl/ holds no wheels (the call did not carry [".whl"]). PYTHON: default python3.
if ! ls .whl/*.whl >/dev/null 2>&1; then
  echo "install_wheels.sh: no wheels in .whl/ (run the device call with carry [\".whl\"])" >&2
  return 2
fi
rm -rf /tmp/site  # a warm machine keeps what an earlier call installed; pip --target would not remove it
"${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -5
export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
"${PYTHON:-python3}" scripts/device/check_wheels.py --site /tmp/site .whl || echo "install_wheels.sh: wheel check failed (continuing)"
