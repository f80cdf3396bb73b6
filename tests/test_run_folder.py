"""The run-folder lock: one writer at a time, released by the kernel however its holder dies."""
import fcntl
import os
import signal
import subprocess
import sys
import threading

import pytest

from zamzoo.train import RunFolderBusy, lock_holder, lock_run_folder
from zamzoo.train.run_files import LOCK_FILE

HOLD = '''
import sys, time
from zamzoo.train import lock_run_folder
with lock_run_folder(sys.argv[1]):
    print('locked', flush=True)
    time.sleep(60)
'''


def _holding_process(folder):
    proc = subprocess.Popen([sys.executable, '-c', HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'locked'
    return proc


def test_second_writer_refused_while_first_holds(tmp_path):
    with lock_run_folder(tmp_path):
        with pytest.raises(RunFolderBusy, match=f'pid {os.getpid()}'):
            with lock_run_folder(tmp_path):
                pass
        assert lock_holder(tmp_path)['pid'] == os.getpid()
    assert lock_holder(tmp_path) is None
    with lock_run_folder(tmp_path):  # released on exit: the next writer gets it
        pass


def test_lock_of_killed_process_is_not_stale(tmp_path):
    proc = _holding_process(tmp_path)
    try:
        assert lock_holder(tmp_path)['pid'] == proc.pid
        with pytest.raises(RunFolderBusy, match=f'pid {proc.pid}'):
            with lock_run_folder(tmp_path):
                pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (tmp_path / LOCK_FILE).exists()  # the file stays behind ...
    assert lock_holder(tmp_path) is None    # ... but holds nothing
    with lock_run_folder(tmp_path):
        assert lock_holder(tmp_path)['pid'] == os.getpid()


def test_asking_who_holds_does_not_release(tmp_path):
    proc = _holding_process(tmp_path)
    try:
        for _ in range(3):
            assert lock_holder(tmp_path)['pid'] == proc.pid
        with pytest.raises(RunFolderBusy):
            with lock_run_folder(tmp_path):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_a_readers_probe_does_not_turn_a_writer_away(tmp_path):
    """`zoo status` probes each run folder's lock with a shared flock (`lock_holder`): a trainer starting during the
    probe was refused as if another process trained the run, and nobody trained it."""
    with lock_run_folder(tmp_path):  # the lock file exists, as in a folder status reads
        pass
    probe = os.open(tmp_path / LOCK_FILE, os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH)
    threading.Timer(0.2, os.close, [probe]).start()  # a probe longer than status's own, then gone
    with lock_run_folder(tmp_path):
        assert lock_holder(tmp_path)['pid'] == os.getpid()


def test_folder_the_lock_created_goes_when_nothing_was_written(tmp_path):
    with lock_run_folder(tmp_path / 'empty'):
        pass
    assert not (tmp_path / 'empty').exists()
    with lock_run_folder(tmp_path / 'used'):
        (tmp_path / 'used' / 'config.json').write_text('{}')
    assert (tmp_path / 'used' / 'config.json').exists()
    (tmp_path / 'mine').mkdir()
    with lock_run_folder(tmp_path / 'mine'):  # a folder the user made stays
        pass
    assert (tmp_path / 'mine').is_dir()
