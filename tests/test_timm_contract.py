"""timm's own generic model tests (tests/test_models.py of the installed timm's source release) on a sample of the
zoo, so that the contract of the next timm release is checked the day it lands. The sdist is downloaded once with
pip into pytest's cache (into the test's tmp_path under -p no:cacheprovider); the plugin tests/timm_zoo_sample.py
narrows timm's parametrisation to the sample."""
import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import timm

from conftest import skip_or_fail_in_ci

# the three backbone families (ResNet, MobileNet, MobileNetV2) and the attention implementations most unlike the
# rest: the fused ZAM path in a ResNet block, ULSAM's subspaces, SPEM's pooling (every module's TorchScript and fx
# paths: test_layers.py::test_jit_fx_dtype_device; one model of every backbone, bottleneck ResNets included, under
# TorchScript and fx: test_models.py; fx leaves: test_timm_fx_leaves.py). resnet50_bam and mobilenet_nam, sampled
# before, took 20 of its 43 s of timm's tests.
SAMPLE = ('resnet18_zam', 'mobilenet_ulsam', 'mobilenetv2_spem')


def _timm_tests(cache: Path) -> Path:
    """The source release's tests/ and pyproject.toml (timm's pytest markers), extracted into `cache`."""
    root = cache / f'timm-{timm.__version__}'
    if (root / 'tests' / 'test_models.py').is_file():
        return root
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary', ':all:', '--disable-pip-version-check',
         '--dest', str(cache), f'timm=={timm.__version__}'], capture_output=True, text=True, timeout=300)
    sdists = list(cache.glob(f'timm-{timm.__version__}.tar.gz'))
    if proc.returncode != 0 or not sdists:
        skip_or_fail_in_ci(f'the timm {timm.__version__} sdist could not be downloaded (no package index reachable?): '
                           f"{(proc.stderr.strip().splitlines() or [''])[-1]}")
    with tarfile.open(sdists[0]) as tar:
        members = [m for m in tar.getmembers()
                   if m.name.startswith(f'{root.name}/tests/') or m.name == f'{root.name}/pyproject.toml']
        tar.extractall(cache, members=members, **({'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}))
    return root


def _params(case: str) -> list:
    """'test_model_default_cfgs[1-resnet18_zam.cifar10]' -> ['1', 'resnet18_zam'] (tags dropped)"""
    return [p.split('.', 1)[0] for p in case.partition('[')[2].rstrip(']').split('-')]


def test_timm_test_models_on_zoo_sample(request, tmp_path):
    cache = getattr(request.config, 'cache', None)  # None under -p no:cacheprovider
    root = _timm_tests(cache.mkdir('timm-sdist') if cache is not None else tmp_path)
    tests_dir = Path(__file__).parent
    env = dict(os.environ, ZAMZOO_TIMM_SAMPLE=','.join(SAMPLE), OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(tests_dir.parent), str(tests_dir), os.environ.get('PYTHONPATH', '')]))
    report = tmp_path / 'report.xml'
    proc = subprocess.run(
        [sys.executable, '-m', 'pytest', '-p', 'timm_zoo_sample', '-p', 'no:cacheprovider', '-q', '-rfE',
         '-c', str(root / 'pyproject.toml'), '--rootdir', str(root), f'--junitxml={report}',
         str(root / 'tests' / 'test_models.py')],
        cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    ran = [c.get('name') for c in ET.parse(report).getroot().iter('testcase') if c.find('skipped') is None]
    for name in SAMPLE:  # every model went through the forward, backward, cfg, torchscript, features and fx tests
        tests = {case.split('[', 1)[0] for case in ran if name in _params(case)}
        assert {'test_model_forward', 'test_model_backward', 'test_model_default_cfgs', 'test_model_forward_torchscript',
                'test_model_forward_features', 'test_model_forward_fx', 'test_model_backward_fx',
                'test_model_forward_fx_torchscript', 'test_model_forward_intermediates',
                'test_model_forward_intermediates_features'} <= tests, (name, sorted(tests))
    assert not any('features_pretrained' in case for case in ran)  # nothing published: no zoo name is pretrained
