"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class KRError(Exception):
    """An error caused by the user's input or environment, with a message saying how to fix it."""


class ConfigError(KRError):
    """A bad config key, value, preset or override."""


class DataError(KRError):
    """A dataset that cannot be found, downloaded, verified or validated."""


def check(ok: bool, key: str, message: str) -> None:
    """A config check (kr.config, a generator backend's section): `config KEY: MESSAGE`."""
    if not ok:
        raise ConfigError(f"config {key}: {message}")
