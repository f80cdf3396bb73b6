"""Whether a CIFAR folder holds the official release: every file of the archive has the md5 torchvision lists for
it (`torchvision.datasets.CIFAR10/CIFAR100` train_list, test_list and meta, checked by torchvision's
`check_integrity`). zamzoo reads local CIFAR-format pickles without that check (`zamzoo.data.cifar`), so a run
records the answer (`official_data` in results.json) and only a run on the official release is published as
trained on CIFAR-10/100."""
from torchvision import datasets as tvd
from torchvision.datasets.utils import check_integrity

from .cifar import cifar_fingerprint, resolve_root

_RELEASES = {'cifar10': tvd.CIFAR10, 'cifar100': tvd.CIFAR100}


def official_release(root, dataset: str) -> bool:
    """True when `root` (as `--data` names it) holds `dataset`'s official files, byte for byte."""
    release = _RELEASES[dataset]
    folder = resolve_root(root, dataset) / release.base_folder
    files = release.train_list + release.test_list + [[release.meta['filename'], release.meta['md5']]]
    return all(check_integrity(str(folder / name), md5) for name, md5 in files)


def recorded_data_is_official(config: dict) -> bool:
    """For a run that recorded no `official_data` (trained before that record): True when the data its config.json
    names still has the fingerprint the run recorded for both splits (the bytes it trained on) and is the official
    release; False when that cannot be told."""
    dataset, root, recorded = config.get('dataset'), config.get('data'), config.get('data_fingerprint')
    if dataset not in _RELEASES or not root or not isinstance(recorded, dict):
        return False
    try:
        same = all(recorded.get(part) == cifar_fingerprint(root, dataset, part == 'train') for part in ('train', 'val'))
    except OSError:
        return False
    return same and official_release(root, dataset)
