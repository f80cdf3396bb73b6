"""What a person watches while a run trains: the `Reporter` protocol the loop calls (on the main rank only) and
`TqdmReporter`, the command line's (a tqdm bar per epoch, one printed line per epoch)."""
import sys
from typing import Optional


class Reporter:
    """What a person watches. The library calls these on the main rank only; the CLI prints (tqdm), the default
    does nothing."""

    def start(self, info: dict):
        pass

    def epoch_start(self, epoch: int, epochs: int, steps: int, images: int):
        pass

    def step(self, steps: int, images: int, loss: Optional[float]):
        pass

    def epoch_end(self, record: dict, epochs: int):
        pass

    def finish(self, results: dict):
        pass


def format_recipe(record: dict, mean, std) -> str:
    """The recipe as the run applies it (config.json's `recipe`, `recipe_record`) and the mean/std its images are
    normalised with, one field a line."""
    fields = {k: v for k, v in record.items() if k != 'normalization'}
    width = max(len(k) for k in list(fields) + ['normalization'])
    lines = [f"recipe {record['name']} (version {record['version']}):"]
    lines += [f'  {k:<{width}}  {tuple(v) if isinstance(v, list) else v}' for k, v in fields.items()]
    lines.append(f"  {'normalization':<{width}}  mean {tuple(mean)} std {tuple(std)}")
    return '\n'.join(lines)


_HEAD = {'kept': 'kept', 'reordered': "rows reordered to this run's class names",
         'reset': 're-initialised (other classes than the source\'s)'}


def format_init(init: dict) -> str:
    """The weights --init started the run from (config.json's `init`) and what became of their classifier."""
    head = _HEAD.get(init.get('head'), init.get('head'))
    sha256 = (init.get('sha256') or 'unknown')[:12]  # None: weights no manifest lists (timm's own)
    return f"init from {init['source']} (sha256 {sha256})" + (f'; classifier {head}' if head else '')


class TqdmReporter(Reporter):
    """A progress bar per epoch (images/s, loss) on stderr, one line per epoch on stdout."""
    bar = None

    def start(self, info):
        c = info['config']
        start = info['start_epoch']
        print(format_recipe(c['recipe'], c['mean'], c['std']))
        print(f"run folder {info['out']}" + (f' (resuming after epoch {start})' if start else ''))
        print(f"model {c['model']} ({c['num_params']:,} params), {c['dataset']} ({c['num_classes']} classes, "
              f"{c['train_images']} train images), {c['world_size']} process(es), batch {c['recipe']['batch_size']} "
              f"({c['per_rank_batch_size']} per process), {c['steps_per_epoch']} steps/epoch")
        print(f"device {c['device']}; amp {c['amp']}, loader {c['loader']}, channels_last {c['channels_last']}, "
              f"compile {c['compile']}, seed {c['seed']}, code {c['code_commit'] or '(not a git checkout)'}")
        if c.get('init'):
            print(format_init(c['init']))
        sys.stdout.flush()

    def epoch_start(self, epoch, epochs, steps, images):
        from tqdm import tqdm
        self.bar = tqdm(total=images, unit='img', unit_scale=True, desc=f'epoch {epoch}/{epochs}', leave=False,
                        dynamic_ncols=True, file=sys.stderr, mininterval=0.5)

    def step(self, steps, images, loss):
        if self.bar is not None:
            self.bar.update(images - self.bar.n)
            if loss is not None:
                self.bar.set_postfix(loss=f'{loss:.4f}', refresh=False)

    def epoch_end(self, record, epochs):
        from .metrics import format_epoch
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        print(format_epoch(record, epochs), flush=True)

    def finish(self, results):
        top1 = results.get('top1')
        line = f"done: {results['epochs']} epochs"
        if top1 is not None:
            line += (f", final top-1 {top1:.2f}% top-5 {results['top5']:.2f}%, best top-1 {results['best_top1']:.2f}% "
                     f"(epoch {results['best_epoch']})")
        line += f", {results['images_per_s']:,.0f} img/s, wall {results['wall_time_s']:.0f} s"
        print(line, flush=True)
