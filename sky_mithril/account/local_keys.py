"""The SSH key pairs on this machine, and which of them opens instances that
boot with a given set of the project's keys.

A local pair is `~/.ssh/id_*` with its `.pub` beside it, or SkyPilot's
`~/.sky/clients/*/ssh/sky-key` (and the older `~/.ssh/sky-key`). Keys are
compared by type and body; the comment is ignored (Mithril may rewrite it).
"""

import dataclasses
from pathlib import Path
from typing import Iterable, List, Optional

from sky_mithril.api import models

LOCAL_KEY_PLACES = '~/.ssh/id_*, ~/.sky/clients/*/ssh/sky-key'


@dataclasses.dataclass(frozen=True)
class LocalKeyPair:
    private_key: Path
    public_key: str

    @property
    def body(self) -> str:
        return key_body(self.public_key)


def key_body(public_key: str) -> str:
    """"type base64" of an OpenSSH public key, without its comment."""
    return ' '.join(public_key.split()[:2])


def local_key_pairs(home: Optional[Path] = None) -> List[LocalKeyPair]:
    """The key pairs on this machine, `~/.ssh/id_*` first (sorted), then SkyPilot's."""
    home = home or Path.home()
    candidates = [
        *sorted(p for p in (home / '.ssh').glob('id_*')
                if p.suffix != '.pub'),
        *sorted((home / '.sky' / 'clients').glob('*/ssh/sky-key')),
        home / '.ssh' / 'sky-key',
    ]
    pairs = []
    for private in candidates:
        public = private.with_name(private.name + '.pub')
        if private.is_file() and public.is_file():
            text = public.read_text(encoding='utf-8').strip()
            if text:
                pairs.append(LocalKeyPair(private, text))
    return pairs


def matching_private_key(key_fids: Iterable[str],
                         project_keys: List[models.SshKey]) -> Optional[Path]:
    """The private key of the first local pair whose public half is one of
    `key_fids` (or a project key Mithril adds to every node: `required`);
    None when no local pair is."""
    wanted = set(key_fids)
    bodies = {key_body(k.public_key) for k in project_keys
              if k.fid in wanted or k.required}
    for pair in local_key_pairs():
        if pair.body in bodies:
            return pair.private_key
    return None
