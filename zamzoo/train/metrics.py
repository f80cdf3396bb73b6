"""Per-epoch metrics (JSON lines), the curves plot, the one-line epoch summary."""
import math
from pathlib import Path
from typing import List

from .._io import atomic_path, dumps_strict, write_text_atomic

def write_metrics(path, history: List[dict]):
    """The whole history as JSON lines, rewritten atomically (a resumed run never leaves duplicate epochs)."""
    write_text_atomic(path, ''.join(dumps_strict(r) + '\n' for r in history))


def format_epoch(record: dict, epochs: int) -> str:
    """'epoch   3/200  lr 0.10000  loss 3.8123  train 12.31%  test 15.20% (top5 40.10%)  4.1 s  12,345 img/s'"""
    w = len(str(epochs))
    parts = [f"epoch {record['epoch']:>{w}}/{epochs}", f"lr {record['lr']:.5f}", f"loss {record['train_loss']:.4f}",
             f"train {record['train_top1']:.2f}%"]
    if record.get('test_top1') is not None:
        parts.append(f"test {record['test_top1']:.2f}% (top5 {record['test_top5']:.2f}%)")
    parts += [f"{record['epoch_time_s']:.1f} s", f"{record['images_per_s']:,.0f} img/s"]
    return '  '.join(parts)


def plot_curves(path, history: List[dict], title: str = ''):
    """Loss, accuracy and lr per epoch in one PNG (matplotlib's Agg backend: no display needed)."""
    import matplotlib
    matplotlib.use('Agg', force=False)
    from matplotlib.figure import Figure

    epochs = [r['epoch'] for r in history]
    fig = Figure(figsize=(13, 3.8), dpi=100)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)

    def series(key):
        return [r.get(key) if r.get(key) is not None else math.nan for r in history]

    ax_loss.plot(epochs, series('train_loss'), label='train')
    ax_loss.plot(epochs, series('test_loss'), label='test')
    ax_loss.set_title('loss')
    ax_acc.plot(epochs, series('train_top1'), label='train top-1')
    ax_acc.plot(epochs, series('test_top1'), label='test top-1')
    ax_acc.plot(epochs, series('test_top5'), label='test top-5', alpha=0.6)
    ax_acc.set_title('accuracy (%)')
    ax_lr.plot(epochs, series('lr'))
    ax_lr.set_title('lr (end of epoch)')
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
    ax_loss.legend()
    ax_acc.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png')
    return Path(path)
