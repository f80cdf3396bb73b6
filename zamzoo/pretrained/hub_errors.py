"""The one translation of the Hugging Face client's failures into `WeightsError`, for every hub call zamzoo makes
(`pretrained=True`, `hf-hub:` names, `--init`, `zamzoo verify`, `zamzoo push`).

The client's own error classes (`huggingface_hub.errors`) name offline mode, a file missing from the cache, a
missing repo, revision or file; its transport's errors (no connection, DNS, timeouts) are recognised without
importing the transport by name: `huggingface_hub.errors.HTTPError` is the transport's base class (httpx2's or
requests', whichever the installed client uses), and every exception defined in that package counts as one.
"""
import contextlib
from typing import Optional

from ..errors import WeightsError


def _cache_hint(cache_dir) -> str:
    from huggingface_hub import constants
    return str(cache_dir or constants.HF_HUB_CACHE)


def is_connection_error(e: BaseException) -> bool:
    """A failure to reach the Hub at all (no HTTP answer): the transport's errors, or the OS's."""
    from huggingface_hub import errors as hf_errors

    if isinstance(e, hf_errors.HfHubHTTPError):  # the Hub answered
        return False
    transport = hf_errors.HTTPError.__module__.split('.')[0]
    return (isinstance(e, (hf_errors.HTTPError, ConnectionError, TimeoutError))
            or type(e).__module__.split('.')[0] == transport)


def _status(e: BaseException) -> Optional[int]:
    return getattr(getattr(e, 'response', None), 'status_code', None)


def _explanations(e: BaseException, where: str, repo_id: Optional[str], filename: Optional[str],
                  revision: Optional[str], cache_dir) -> tuple:
    """(error types, explanation) pairs: the first that matches wins, so subclasses come before their bases."""
    from huggingface_hub import constants
    from huggingface_hub import errors as hf_errors

    kind = f'[{type(e).__name__}]'
    what_file = f'{filename} of {where}' if filename else where
    return (
        (hf_errors.OfflineModeIsEnabled if filename is None else (),
         f'offline mode is on (HF_HUB_OFFLINE=1) and {where} needs the Hub: unset HF_HUB_OFFLINE and retry. {kind}'),
        ((hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled),
         f'{what_file} is not in the Hugging Face cache ({_cache_hint(cache_dir)}) and the Hub cannot be reached '
         f'(offline mode HF_HUB_OFFLINE=1, or no network). Go online and retry (a download stays in the cache; '
         f'for a zoo name `zamzoo verify NAME` with network fills it), or use a local file '
         f'(pretrained_cfg_overlay=dict(file=...), --init FILE, --checkpoint FILE). {kind}'),
        (hf_errors.GatedRepoError,
         f'{where} is gated: log in (`hf auth login` or HF_TOKEN) with an account that has access. [{e}]'),
        (hf_errors.RepositoryNotFoundError,
         f'the Hub repository {repo_id} does not exist or is private: check the name, or log in (`hf auth login` '
         f'or HF_TOKEN) if it is private; unpublished models must be trained first. {kind}'),
        (hf_errors.RevisionNotFoundError,
         f'commit {revision} of {repo_id} does not exist on the Hub (a pinned revision that was never pushed '
         f'there? re-run `zamzoo push`). {kind}'),
        (hf_errors.EntryNotFoundError,
         f'{where} has no file {filename}; re-publish it with `zamzoo export` and `zamzoo push`. {kind}'),
        (hf_errors.HfHubHTTPError, f'the Hub answered with an error for {where}: {e}' + (
            ' (the token was refused: log in again, `hf auth login` or HF_TOKEN, with a token that has access; '
            'pushing needs write access)' if _status(e) in (401, 403) else '')),
        (Exception if is_connection_error(e) else (),
         f'the Hugging Face Hub ({constants.ENDPOINT}) cannot be reached ({type(e).__name__}: {e}); check your '
         f'network (and HF_ENDPOINT, if set) and retry.'),
    )


def hub_error(e: BaseException, what: str, repo_id: Optional[str] = None, filename: Optional[str] = None,
              revision: Optional[str] = None, cache_dir=None) -> Optional[WeightsError]:
    """A WeightsError '`what`: <what went wrong and what to do>' for a failure of the Hub client, None for anything
    else. `filename` is None for calls that are not a file download (creating a repo, uploading)."""
    where = f'{repo_id}' + (f'@{revision}' if revision else '') if repo_id else 'the Hub'
    for types, explanation in _explanations(e, where, repo_id, filename, revision, cache_dir):
        if isinstance(e, types):
            return WeightsError(f'{what}: {explanation}')
    return None


@contextlib.contextmanager
def hub_errors(what: str, repo_id: Optional[str] = None, filename: Optional[str] = None,
               revision: Optional[str] = None, cache_dir=None):
    """Turn the Hub client's failures inside the block into `hub_error`'s WeightsError; others pass unchanged."""
    try:
        yield
    except WeightsError:
        raise
    except Exception as e:
        err = hub_error(e, what, repo_id, filename, revision, cache_dir)
        if err is None:
            raise
        raise err from e
