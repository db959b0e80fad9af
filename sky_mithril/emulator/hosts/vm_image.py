"""The "VM image": what a Mithril Ubuntu image has and this machine lacks.

Emulated hosts (`namespace`) are namespaces of this machine, so everything a
Mithril VM offers SkyPilot must exist here once: sshd, sudo, rsync, a user
`ubuntu` with passwordless sudo, a Python 3.10 the `ubuntu` user can run, the
uv binary, and, because hosts cannot reach PyPI, a uv cache warmed on this
machine with everything SkyPilot installs on a fresh node, so that the node's
installs run offline, and a wheelhouse for the hosts' pip (a remote
controller builds SkyPilot's wheel for the clusters it launches). Mithril's own commands on its images are stand-ins here
(`MITHRIL_COMMANDS`: `foundrypf`, its port forwarder), which the hosts see in
their `/usr/local/bin`; SkyPilot's network probe on a host asks the emulator
(`network_probe`).

`ensure_vm_image()` prepares all of it under one directory (default
`/var/cache/sky-mithril/vm-image`, env `SKY_MITHRIL_VM_IMAGE_DIR`) and writes a
stamp keyed by the versions involved; later calls find the stamp and only check
that the system parts (packages, user) are still there. The stand-ins are
copied in whenever the image's copy differs from this package's, so a changed
stand-in reaches an image built before it without a rebuild.
"""

import dataclasses
import fcntl
import glob
import hashlib
import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from sky_mithril.emulator.hosts import network_probe
from sky_mithril.files import write_atomically

DEFAULT_IMAGE_DIR = Path('/var/cache/sky-mithril/vm-image')
ENV_IMAGE_DIR = 'SKY_MITHRIL_VM_IMAGE_DIR'
ENV_PYTHON_SOURCE = 'SKY_MITHRIL_PYTHON310'
PYTHON_SOURCE_GLOB = '/root/.pyenv/versions/3.10.*'
SSH_USER = 'ubuntu'
UV_VERSION = '0.13.9'
# What a Mithril Ubuntu image ships and SkyPilot's node setup relies on
# (`patch` for Ray's patches, `lsof`/`procps` in the setup commands,
# `e2fsprogs` to format a block volume), and `nftables` for the hosts'
# network edge, which `foundrypf` opens ports in.
APT_PACKAGES = ('openssh-server', 'sudo', 'rsync', 'patchelf', 'iproute2',
                'patch', 'procps', 'lsof', 'e2fsprogs', 'nftables')
# Held by every `ensure_packages` install on the machine; apt-get waits this
# long for dpkg's own lock (held by an install of another tool).
APT_LOCK_FILE = os.path.join(tempfile.gettempdir(), 'sky-mithril-apt.lock')
APT_LOCK_WAIT_SECONDS = 600
# Stand-ins for the commands a Mithril image adds to /usr/local/bin, by name:
# the script in this package each one is.
MITHRIL_COMMANDS: Dict[str, Path] = {
    'foundrypf': Path(__file__).with_name('foundrypf.sh'),
}
SUDOERS_FILE = Path('/etc/sudoers.d/90-sky-mithril-ubuntu')
# Bump when the image layout or build steps change.
IMAGE_FORMAT = 1
# The cloud name SkyPilot substitutes into `skypilot[{cloud}, remote]`.
CLOUD_EXTRA = 'mithril'
# A remote SkyPilot controller installs its plugins' wheels
# (`controller_wheel_path`) beside SkyPilot: the cache holds what this
# distribution's wheel needs too, so a controller host installs it offline.
PLUGIN_DISTRIBUTION = 'sky-mithril'
# What `pip wheel` installs to build SkyPilot's wheel (a setup.py project)
# on a controller host: pip on the hosts reads only the image's wheelhouse.
BUILD_REQUIREMENTS = ('setuptools', 'wheel')

Progress = Callable[[str], None]


class CommandError(RuntimeError):
    """A command failed; the message names it and quotes its stderr."""


class VmImageError(RuntimeError):
    """The image could not be prepared; the message names the failing step."""


@dataclasses.dataclass(frozen=True)
class VmImage:
    """Paths of a prepared image. Hosts seed each home from `home_template`
    and see `mithril_commands` over their `/usr/local/bin`."""

    root: Path
    python_home: Path
    python: Path
    uv: Path
    uvx: Path
    uv_cache: Path
    uv_config: Path
    wheelhouse: Path
    home_template: Path
    mithril_commands: Path
    skypilot_wheel: Path
    stamp: Path
    ssh_user: str = SSH_USER


def run_command(cmd: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
                cwd: Optional[Path] = None, timeout: Optional[float] = None,
                check: bool = True) -> subprocess.CompletedProcess:
    """Runs `cmd`, capturing output; failures name the command and its stderr."""
    try:
        result = subprocess.run(list(cmd), env=None if env is None else dict(env),
                                cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CommandError(f'`{shlex.join(cmd)}` could not run: {e}') from e
    if check and result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-4000:]
        raise CommandError(f'`{shlex.join(cmd)}` failed with exit code '
                           f'{result.returncode}: {output}')
    return result


def image_dir() -> Path:
    """Where the image lives: env `SKY_MITHRIL_VM_IMAGE_DIR` or the default."""
    return Path(os.environ.get(ENV_IMAGE_DIR) or DEFAULT_IMAGE_DIR)


def _paths(root: Path) -> VmImage:
    python_home = root / 'python3.10'
    return VmImage(root=root, python_home=python_home,
                   python=python_home / 'bin' / 'python3.10',
                   uv=root / 'bin' / 'uv', uvx=root / 'bin' / 'uvx',
                   uv_cache=root / 'uv-cache',
                   uv_config=root / 'uv-vm.toml',
                   wheelhouse=root / 'wheelhouse',
                   home_template=root / 'home-template',
                   mithril_commands=root / 'mithril-commands',
                   skypilot_wheel=root / 'wheel' / _wheel_name(),
                   stamp=root / 'stamp.json')


def _wheel_name() -> str:
    """The file name `wheel_utils` gives the SkyPilot wheel."""
    import sky  # pylint: disable=import-outside-toplevel
    from packaging import version  # pylint: disable=import-outside-toplevel
    return f'skypilot-{version.parse(sky.__version__)}-py3-none-any.whl'


def skypilot_install_steps(wheel: str, *, cloud: str = CLOUD_EXTRA) -> List[List[str]]:
    """SkyPilot 0.14.1's `uv pip install` arguments on a fresh node, in order.

    From `sky/skylet/constants.py`: RAY_INSTALLATION_COMMANDS, then
    SKYPILOT_WHEEL_INSTALLATION_COMMANDS (the wheel `wheel_utils` builds,
    with extras `[{cloud}, remote]`).
    """
    from sky.skylet import constants  # pylint: disable=import-outside-toplevel
    ray_steps = [
        ['setuptools<70'],
        ['click<8.3.0'],
        ['-U', f'ray[default]=={constants.SKY_REMOTE_RAY_VERSION}',
         'pydantic-core==2.41.1', 'click<8.3.0'],
    ]
    for args in ray_steps:
        quoted = ' '.join(a if a.startswith('-') else f'"{a}"' for a in args)
        if f'install {quoted}' not in constants.RAY_INSTALLATION_COMMANDS:
            raise VmImageError(f'SkyPilot no longer runs `uv pip install {quoted}` '
                               'on nodes: update skypilot_install_steps() from '
                               'RAY_INSTALLATION_COMMANDS in sky/skylet/constants.py')
    if '[{cloud}, remote]' not in constants.SKYPILOT_WHEEL_INSTALLATION_COMMANDS:
        raise VmImageError('SkyPilot no longer installs its wheel with extras '
                           '`[{cloud}, remote]`: update skypilot_install_steps()')
    return [*ray_steps, [f'{wheel}[{cloud}, remote]']]


def plugin_requirements() -> List[str]:
    """What PLUGIN_DISTRIBUTION's wheel requires (its extras left out)."""
    from importlib import metadata  # pylint: disable=import-outside-toplevel
    return sorted(requirement
                  for requirement in metadata.requires(PLUGIN_DISTRIBUTION) or []
                  if 'extra ==' not in requirement)


def _stamp_key(python_source: Path) -> Dict[str, object]:
    """What the image depends on; a change rebuilds it (the uv cache is kept)."""
    import sky  # pylint: disable=import-outside-toplevel
    from sky.skylet import constants  # pylint: disable=import-outside-toplevel
    commands = (constants.UV_INSTALLATION_COMMANDS +
                constants.SKY_USER_ENV_CREATION_COMMANDS +
                constants.RAY_SKYPILOT_INSTALLATION_COMMANDS)
    return {
        'format': IMAGE_FORMAT,
        'skypilot': sky.__version__,
        'ray': constants.SKY_REMOTE_RAY_VERSION,
        'uv': UV_VERSION,
        'python_source': str(python_source),
        'cloud': CLOUD_EXTRA,
        'install_commands_sha256': hashlib.sha256(commands.encode()).hexdigest(),
        'plugin_requirements': plugin_requirements(),
        'build_requirements': list(BUILD_REQUIREMENTS),
    }


def _find_python_source() -> Path:
    explicit = os.environ.get(ENV_PYTHON_SOURCE)
    candidates = [explicit] if explicit else sorted(
        glob.glob(PYTHON_SOURCE_GLOB),
        key=lambda p: [int(x) for x in Path(p).name.split('.') if x.isdigit()])
    for candidate in reversed(candidates):
        if (Path(candidate) / 'bin' / 'python3.10').is_file():
            return Path(candidate)
    raise VmImageError(
        'No CPython 3.10 to copy into the VM image: looked for '
        f'{explicit or PYTHON_SOURCE_GLOB}/bin/python3.10 (set '
        f'{ENV_PYTHON_SOURCE} to a Python 3.10 installation prefix).')


def _read_stamp(image: VmImage) -> Dict[str, object]:
    try:
        return json.loads(image.stamp.read_text())
    except (OSError, ValueError):
        return {}


def _is_ready(image: VmImage, key: Dict[str, object]) -> bool:
    return _read_stamp(image) == key and all(
        p.exists() for p in (image.python, image.uv, image.uv_cache,
                             image.uv_config, image.wheelhouse,
                             image.home_template,
                             image.skypilot_wheel))


def _missing_packages(packages: Sequence[str] = APT_PACKAGES) -> List[str]:
    result = run_command(['dpkg-query', '-W', '-f=${Package} ${Status}\n',
                          *packages], check=False)
    installed = {line.split()[0] for line in result.stdout.splitlines()
                 if line.endswith(' install ok installed')}
    return [p for p in packages if p not in installed]


def ensure_packages(packages: Sequence[str], progress: Progress) -> None:
    """Installs the Debian packages of `packages` this machine lacks (root).

    A fresh machine has none of what the demo's hosts and SkyPilot's client
    need, so every entry point calls this before it checks for a tool. One
    install at a time on the machine (APT_LOCK_FILE): two processes that
    both find a package missing (the demo's hosts and a sandboxed SkyPilot
    starting together) would otherwise collide on dpkg's lock, and the
    second would fail; apt-get also waits for a dpkg run of another tool.
    """
    if not _missing_packages(packages):
        return
    if os.geteuid() != 0:
        missing = _missing_packages(packages)
        raise VmImageError(f'Missing Debian packages: {" ".join(missing)}. '
                           f'Install them: `sudo apt-get install -y '
                           f'{" ".join(missing)}`.')
    with open(APT_LOCK_FILE, 'w', encoding='utf-8') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = _missing_packages(packages)
        if missing:
            _apt_install(missing, progress)


def _apt_install(missing: Sequence[str], progress: Progress) -> None:
    progress(f'Installing apt packages: {" ".join(missing)} (once per machine)')
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    wait = ['-o', f'DPkg::Lock::Timeout={APT_LOCK_WAIT_SECONDS}']
    run_command(['apt-get', *wait, 'update'], env=env, timeout=600)
    # Keep package scripts from starting a system-wide sshd on this machine.
    policy = Path('/usr/sbin/policy-rc.d')
    added_policy = not policy.exists()
    if added_policy:
        policy.write_text('#!/bin/sh\nexit 101\n')
        policy.chmod(0o755)
    try:
        run_command(['apt-get', *wait, 'install', '-y',
                     '--no-install-recommends', *missing], env=env,
                    timeout=900)
    finally:
        if added_policy:
            policy.unlink()


def _ensure_user(progress: Progress) -> None:
    try:
        pwd.getpwnam(SSH_USER)
    except KeyError:
        progress(f'Creating user {SSH_USER}')
        run_command(['useradd', '--create-home', '--user-group', '--shell',
                     '/bin/bash', SSH_USER])
    # `*` rather than useradd's `!`: key-only logins, but not a "locked" account.
    shadow = {line.split(':')[0]: line.split(':')[1]
              for line in Path('/etc/shadow').read_text().splitlines() if ':' in line}
    if shadow.get(SSH_USER) != '*':
        run_command(['usermod', '-p', '*', SSH_USER])
    rule = f'{SSH_USER} ALL=(ALL) NOPASSWD:ALL\n'
    if not SUDOERS_FILE.exists() or SUDOERS_FILE.read_text() != rule:
        SUDOERS_FILE.parent.mkdir(mode=0o750, exist_ok=True)
        staged = SUDOERS_FILE.with_name('.' + SUDOERS_FILE.name)
        staged.write_text(rule)
        staged.chmod(0o440)
        run_command(['visudo', '-cf', str(staged)])
        staged.rename(SUDOERS_FILE)


def _elf_files(root: Path) -> Iterator[Path]:
    for path in root.rglob('*'):
        if path.is_file() and not path.is_symlink():
            with open(path, 'rb') as f:
                if f.read(4) == b'\x7fELF':
                    yield path


def _copy_python(source: Path, image: VmImage, progress: Progress) -> None:
    """Copies CPython 3.10 and rewrites RUNPATHs that point into `source`."""
    progress(f'Copying Python 3.10 from {source}')
    if image.python_home.exists():
        shutil.rmtree(image.python_home)
    shutil.copytree(source, image.python_home, symlinks=True,
                    ignore=shutil.ignore_patterns('test', 'tests', 'idle_test'))
    lib = image.python_home / 'lib'
    for elf in _elf_files(image.python_home):
        printed = run_command(['patchelf', '--print-rpath', str(elf)], check=False)
        if printed.returncode != 0 or str(source) not in printed.stdout:
            continue
        relative = os.path.relpath(lib, elf.parent)
        run_command(['patchelf', '--set-rpath', f'$ORIGIN/{relative}', str(elf)])
    check = run_command(
        ['runuser', '-u', SSH_USER, '--', str(image.python), '-I', '-c',
         'import ssl, sqlite3, sys; print(sys.prefix)'], env=_clean_env())
    if Path(check.stdout.strip()) != image.python_home:
        raise VmImageError(f'{image.python} reports prefix {check.stdout.strip()!r}, '
                           f'expected {image.python_home}')


def _install_uv(image: VmImage, progress: Progress) -> None:
    """Extracts uv and uvx from PyPI's `uv` wheel (the only way in here)."""
    progress(f'Downloading uv {UV_VERSION} from PyPI')
    with tempfile.TemporaryDirectory() as tmp:
        run_command([sys.executable, '-m', 'pip', 'download', '--no-deps',
                     '--only-binary', ':all:', '--dest', tmp,
                     f'uv=={UV_VERSION}'], timeout=600)
        wheels = list(Path(tmp).glob('uv-*.whl'))
        if not wheels:
            raise VmImageError(f'pip downloaded no uv wheel into {tmp}')
        image.uv.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name, target in (('uv', image.uv), ('uvx', image.uvx)):
                member = f'uv-{UV_VERSION}.data/scripts/{name}'
                with wheel.open(member) as src, open(target, 'wb') as dst:
                    shutil.copyfileobj(src, dst)
                target.chmod(0o755)
    run_command([str(image.uv), '--version'])


def _build_skypilot_wheel(image: VmImage, progress: Progress) -> None:
    """Builds the wheel exactly as `sky launch` does (`wheel_utils`)."""
    progress('Building the SkyPilot wheel the way `sky launch` does')
    with tempfile.TemporaryDirectory() as tmp:
        env = _clean_env()
        env.update(HOME=tmp, TMPDIR=tmp)
        result = run_command(
            [sys.executable, '-c',
             'from sky.backends import wheel_utils\n'
             'path, _ = wheel_utils.build_sky_wheel()\n'
             'print(next(path.glob("skypilot-*.whl")))'],
            env=env, cwd=Path(tmp), timeout=600)
        built = Path(result.stdout.strip().splitlines()[-1])
        if built.name != image.skypilot_wheel.name:
            raise VmImageError(f'SkyPilot built {built.name}, expected '
                               f'{image.skypilot_wheel.name}')
        image.skypilot_wheel.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(built, image.skypilot_wheel)


def _clean_env() -> Dict[str, str]:
    drop = ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV', 'CONDA_PREFIX')
    return {k: v for k, v in os.environ.items()
            if k not in drop and not k.startswith('UV_')}


def _warm_uv_cache(image: VmImage, progress: Progress) -> None:
    """Runs SkyPilot's node installs here, online, into throwaway venvs."""
    progress('Warming the uv cache from PyPI with what SkyPilot installs on a node')
    image.uv_cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = _clean_env()
        env.update(HOME=tmp, UV_CACHE_DIR=str(image.uv_cache), UV_NO_CONFIG='1',
                   UV_SYSTEM_CERTS='1', UV_LINK_MODE='copy',
                   UV_SYSTEM_PYTHON='false', UV_PYTHON_DOWNLOADS='never',
                   PATH=f'{image.python.parent}:{env.get("PATH", "/usr/bin:/bin")}')
        runtime = Path(tmp) / 'skypilot-runtime'
        uv = str(image.uv)
        run_command([uv, 'venv', '--seed', str(runtime), '--python', '3.10'],
                    env=env, cwd=Path(tmp), timeout=600)
        pip_env = dict(env, VIRTUAL_ENV=str(runtime))
        for args in skypilot_install_steps(str(image.skypilot_wheel)):
            progress(f'  uv pip install {shlex.join(args)}')
            run_command([uv, 'pip', 'install', *args], env=pip_env,
                        cwd=Path(tmp), timeout=1200)
        progress(f'  uv pip install (what {PLUGIN_DISTRIBUTION} requires)')
        run_command([uv, 'pip', 'install', *plugin_requirements()], env=pip_env,
                    cwd=Path(tmp), timeout=1200)
        # SKY_USER_ENV_CREATION_COMMANDS: a seeded venv on the system python3.
        system_python = shutil.which('python3', path='/usr/bin:/bin')
        if system_python:
            run_command([uv, 'venv', '--seed', '--relocatable',
                         '--system-site-packages', '--python', system_python,
                         str(Path(tmp) / 'sky-user-env')],
                        env=env, cwd=Path(tmp), timeout=600)
    run_command(['chown', '-R', f'{SSH_USER}:{SSH_USER}', str(image.uv_cache)])


def _fill_wheelhouse(image: VmImage, progress: Progress) -> None:
    """Downloads BUILD_REQUIREMENTS' wheels for the hosts' pip."""
    progress(f'Downloading {", ".join(BUILD_REQUIREMENTS)} for the hosts\' pip')
    if image.wheelhouse.exists():
        shutil.rmtree(image.wheelhouse)
    run_command([sys.executable, '-m', 'pip', 'download', '--only-binary',
                 ':all:', '--dest', str(image.wheelhouse), *BUILD_REQUIREMENTS],
                timeout=600)
    image.wheelhouse.chmod(0o755)


def _write_home_template(image: VmImage) -> None:
    """What cloud-init and the image leave in ~ubuntu, minus authorized_keys."""
    image.uv_config.write_text(
        '# sky-mithril VM image: hosts cannot reach PyPI; uv installs from the\n'
        '# cache warmed on the machine that runs the emulator.\n'
        'system-certs = true\n'
        'offline = true\n'
        f'cache-dir = "{image.uv_cache}"\n')
    template = image.home_template
    if template.exists():
        shutil.rmtree(template)
    shutil.copytree('/etc/skel', template, symlinks=True)
    bin_dir = template / '.local' / 'bin'
    bin_dir.mkdir(parents=True)
    for name, target in (('uv', image.uv), ('uvx', image.uvx),
                         ('python3.10', image.python)):
        (bin_dir / name).symlink_to(target)
    config_dir = template / '.config' / 'uv'
    config_dir.mkdir(parents=True)
    shutil.copy(image.uv_config, config_dir / 'uv.toml')
    pip_dir = template / '.config' / 'pip'
    pip_dir.mkdir(parents=True)
    (pip_dir / 'pip.conf').write_text(
        '# sky-mithril VM image: hosts cannot reach PyPI; pip installs from\n'
        '# the wheelhouse filled on the machine that runs the emulator.\n'
        '[global]\n'
        'no-index = true\n'
        f'find-links = {image.wheelhouse}\n')


def _stand_ins(image: VmImage) -> Dict[Path, bytes]:
    """What the image holds in place of the internet and Mithril's own
    commands, by path: the commands, and the sitecustomize its Python
    (every venv made from it) imports, which sends SkyPilot's network probe
    to the emulator."""
    files = {image.mithril_commands / name: source.read_bytes()
             for name, source in MITHRIL_COMMANDS.items()}
    files[image.python_home / 'lib' / 'python3.10' / 'sitecustomize.py'] = (
        network_probe.sitecustomize_from_probe_file(
            written_by='the emulator\'s VM image').encode())
    return files


def _stand_ins_current(image: VmImage) -> bool:
    """Whether the image's stand-ins are this package's."""
    return all(target.is_file() and target.read_bytes() == content
               for target, content in _stand_ins(image).items())


def _install_stand_ins(image: VmImage, progress: Progress) -> None:
    """Copies each stand-in whose copy in the image differs from this
    package's (or is missing), executable by everyone."""
    for target, content in _stand_ins(image).items():
        if target.is_file() and target.read_bytes() == content:
            continue
        progress(f'Installing the {target.name} stand-in')
        write_atomically(target, content, mode=0o755)


def ensure_vm_image(progress: Optional[Progress] = None) -> VmImage:
    """Prepares the image once (needs root); later calls return it quickly."""
    say: Progress = progress or (lambda _message: None)
    image = _paths(image_dir())
    if os.geteuid() != 0:
        built_from = Path(str(_read_stamp(image).get('python_source', '')))
        if (_is_ready(image, _stamp_key(built_from)) and
                _stand_ins_current(image) and not _missing_packages()):
            return image
        raise VmImageError(f'Preparing the VM image in {image.root} needs root '
                           '(apt packages, user ubuntu).')
    key = _stamp_key(_find_python_source())
    image.root.mkdir(mode=0o755, parents=True, exist_ok=True)
    for directory in [image.root, *image.root.parents]:
        if directory.stat().st_mode & 0o005 != 0o005:
            raise VmImageError(f'{directory} must be readable and searchable by '
                               f'everyone: user {SSH_USER} runs the image from '
                               f'{image.root} ({ENV_IMAGE_DIR} moves it).')
    with open(image.root.parent / f'.{image.root.name}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ensure_packages(APT_PACKAGES, say)
        _ensure_user(say)
        if not _is_ready(image, key):
            say(f'Building the VM image in {image.root}')
            image.stamp.unlink(missing_ok=True)
            _copy_python(Path(str(key['python_source'])), image, say)
            _install_uv(image, say)
            _build_skypilot_wheel(image, say)
            _warm_uv_cache(image, say)
            _fill_wheelhouse(image, say)
            _write_home_template(image)
            image.stamp.write_text(json.dumps(key, indent=2) + '\n')
            say('VM image ready')
        _install_stand_ins(image, say)
    return image
