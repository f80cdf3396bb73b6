"""The sha256 of a weight file: how the manifest records it and how the Hub names LFS files."""
from huggingface_hub.utils.sha import sha_fileobj


def sha256_file(path) -> str:
    with open(path, 'rb') as f:
        return sha_fileobj(f).hex()
