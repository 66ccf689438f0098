"""One trial in a subprocess: its output logged, its metric streamed line by line, stopped on request."""

import sys
import threading
import time

from nfn_lab.sweeps.trial import run_trial

WRITER = """
import json, os, sys, time
with open(os.environ["NFN_LAB_SWEEP_REPORT"], "a") as f:
    f.write(json.dumps({"step": 1, "metrics": {"val/x": 0.5}}) + "\\n" + '{"step": 2, "metr')  # half a line...
    f.flush()
    time.sleep(1.2)
    f.write('ics": {"val/x": 0.25}}\\n' + json.dumps({"step": 3, "metrics": {"val/y": 1.0}}) + "\\n")  # ...completed
    f.flush()
    f.write(json.dumps({"step": 4, "metrics": {"val/x": 0.75}}) + "\\n")
    f.flush()
print("bye")
time.sleep(float(sys.argv[1]))
sys.exit(4)
"""


def test_reports_arrive_whole_and_in_order(tmp_path):
    seen = []
    outcome = run_trial(
        [sys.executable, "-c", WRITER, "0"], "val/x", tmp_path / "logs" / "t.log", lambda s, v: seen.append((s, v))
    )
    assert seen == [(1, 0.5), (2, 0.25), (3, 0.75)]  # a line without the metric is skipped
    assert outcome.values == [0.5, 0.25, 0.75] and outcome.returncode == 4 and not outcome.stopped
    assert outcome.log.read_text().startswith(f"$ {sys.executable} -c") and outcome.log_tail().endswith("bye")


def test_on_report_stops_the_run(tmp_path):
    start = time.monotonic()
    outcome = run_trial([sys.executable, "-c", WRITER, "60"], "val/x", tmp_path / "t.log", lambda s, v: s == 2)
    assert outcome.stopped and not outcome.interrupted and outcome.values == [0.5, 0.25] and outcome.returncode < 0
    assert time.monotonic() - start < 30
    again = run_trial([sys.executable, "-c", WRITER, "0"], "val/x", tmp_path / "t.log")  # a rerun starts a new stream
    assert again.values == [0.5, 0.25, 0.75]


def test_an_interrupt_stops_the_run(tmp_path):
    interrupt = threading.Event()
    threading.Timer(1.5, interrupt.set).start()
    outcome = run_trial([sys.executable, "-c", WRITER, "60"], "val/x", tmp_path / "t.log", interrupt=interrupt)
    assert outcome.stopped and outcome.interrupted and outcome.returncode < 0
