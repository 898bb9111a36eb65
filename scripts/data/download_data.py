"""Download the paper's released datasets into the sweep layout (docs/DATA.md):

    python scripts/data/download_data.py --env cheetah-run --what eval --dry_run    # names and sizes, nothing fetched
    python scripts/data/download_data.py --env cheetah-run                          # full + eval + labeled, distractors
    python scripts/data/download_data.py --env all --setting vanilla --what labeled --budgets 2 128 --out data

The links are the release's list (data/release-data-links.txt); docs/DATA.md gives the names files land under.
A file is fetched into `<name>.partial` (continued with an HTTP range request after an interruption), checked (the
announced size, the released layout, the trajectory count of a labeled set) and only then renamed into place; a file
in place is skipped. The free disk space is checked before the first byte is fetched.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

if __package__ in (None, ""):  # run as `python scripts/data/download_data.py`: make `src` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import h5py  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from scripts.sample_labeled_data import trajectory_names  # noqa: E402
from src.data import DatasetError, read_root_attrs  # noqa: E402
from src.errors import MissingKeyError, UserError, cli  # noqa: E402

LINKS = Path(__file__).resolve().parents[2] / "data" / "release-data-links.txt"
WHAT = ("full", "eval", "labeled")
SETTINGS = {"distractors": "scale-easy-video-hard", "vanilla": "vanilla"}  # --setting -> the release's name part
RELEASED_NAME = re.compile(
    r"(?P<env>[a-z]+-[a-z]+)-(?P<setting>scale-easy-video-hard|vanilla)-"
    r"(?:64px-(?P<full_or_eval>5k|eval)|labeled-1000x(?P<budget>\d+)-64px)\.hdf5"
)
CHUNK = 2**20  # bytes read per network call
BYTES_BAR = dict(unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True)  # tqdm options
SPARE_BYTES = 2**30  # free space left over after the planned downloads


class DownloadError(UserError):
    """A download or a downloaded file that cannot be used: the message names the file and what to do."""


@dataclasses.dataclass
class Item:
    """One released file: where it comes from and the name it gets in the sweep layout."""

    url: str
    env: str
    setting: str  # "distractors" / "vanilla"
    what: str  # "full" / "eval" / "labeled"
    budget: int | None  # trajectories of a labeled set
    dest: Path
    size: int | None = None  # bytes the server announces (None: not asked, or unknown)
    size_note: str = ""  # why the size is unknown

    @property
    def partial(self) -> Path:
        return self.dest.with_name(self.dest.name + ".partial")

    @property
    def have(self) -> int:
        """Bytes fetched so far (in the .partial)."""
        return self.partial.stat().st_size if self.partial.exists() else 0


def parse_link(url: str, out: Path) -> Item:
    """The Item of one released URL, its destination under out in the sweep layout."""
    name = url.rsplit("/", 1)[-1]
    m = RELEASED_NAME.fullmatch(name)
    if m is None:
        raise DownloadError(f"{url}: not a released dataset name (<env>-<setting>-64px-5k|64px-eval|labeled-...)")
    env, budget = m["env"], int(m["budget"]) if m["budget"] else None
    setting = "vanilla" if m["setting"] == "vanilla" else "distractors"
    what = "labeled" if budget is not None else "eval" if m["full_or_eval"] == "eval" else "full"
    suffix = {"labeled": f"-labeled-1000x{budget}", "eval": "-eval", "full": ""}[what]
    dest = (out / "vanilla" if setting == "vanilla" else out) / f"{env}{suffix}.hdf5"
    return Item(url, env, setting, what, budget, dest)


def select(items: list[Item], envs: list[str], settings: list[str], what: list[str], budgets: list[int] | None):
    """The items asked for; an env, a budget or a combination the release does not have is an error naming it."""
    known_envs = sorted({i.env for i in items})
    envs = known_envs if "all" in envs else envs
    unknown = [e for e in envs if e not in known_envs]
    if unknown:
        raise DownloadError(f"--env {' '.join(unknown)}: not in the release; choose from {known_envs} or all")
    known = sorted({i.budget for i in items if i.budget is not None})
    bad = [b for b in budgets or [] if b not in known]
    if bad:
        raise DownloadError(f"--budgets {' '.join(map(str, bad))}: the release's labeled sets hold {known}")
    wanted = [i for i in items if i.env in envs and i.setting in settings and i.what in what]
    chosen = [i for i in wanted if i.budget is None or budgets is None or i.budget in budgets]
    combinations = [(e, s, w) for e in envs for s in settings for w in what]
    missing = [" ".join(c) for c in combinations if not any((i.env, i.setting, i.what) == c for i in chosen)]
    if not chosen:
        raise DownloadError(f"the release has no such file ({'; '.join(missing)})")
    for m in missing:
        print(f"not in the release: {m}")
    return chosen


def announced_sizes(items: list[Item], timeout: float) -> None:
    """Each file's size by a HEAD request; a host that cannot be reached is not asked again (size unknown, with why)."""
    unreachable: dict[str, str] = {}
    for item in items:
        host = urllib.request.urlparse(item.url).netloc
        if host in unreachable:
            item.size_note = unreachable[host]
            continue
        try:
            with urllib.request.urlopen(urllib.request.Request(item.url, method="HEAD"), timeout=timeout) as r:
                length = r.headers.get("Content-Length")
                item.size = int(length) if length is not None else None
                item.size_note = "" if length is not None else "the server announces no size"
        except urllib.error.HTTPError as e:
            item.size_note = f"HTTP {e.code} {e.reason}"
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            unreachable[host] = item.size_note = f"{host} cannot be reached: {reason}"


def human(n: int | None) -> str:
    if n is None:
        return "?"
    exponent = min(4, max(0, (int(n).bit_length() - 1) // 10))
    return f"{n} B" if exponent == 0 else f"{n / 1024**exponent:.1f} {('B', 'KiB', 'MiB', 'GiB', 'TiB')[exponent]}"


def check_free_space(items: list[Item]) -> None:
    """Refuses to start when the bytes still to fetch do not fit on the output disk with SPARE_BYTES to spare."""
    need: dict[Path, int] = {}
    for item in (i for i in items if i.size is not None):
        need[item.dest.parent] = need.get(item.dest.parent, 0) + max(0, item.size - item.have)
    for root, n in need.items():
        free = shutil.disk_usage(root).free
        if n + SPARE_BYTES > free:
            raise DownloadError(
                f"{root}: {human(n)} to download but only {human(free)} free (1 GiB is kept spare); free some "
                "space or choose fewer files (--env, --what, --budgets)"
            )


def check_dataset(path: Path, item: Item) -> None:
    """The file opens as a dataset in the released layout and is the one its name says. Reads metadata only."""
    try:
        attrs = read_root_attrs(str(path))
        with h5py.File(path, "r") as f:
            count = len(trajectory_names(f, str(path)))
    except MissingKeyError:
        raise
    except (OSError, KeyError, RuntimeError) as e:  # h5py raises KeyError for a damaged object too
        raise DatasetError(f"{path}: not a readable HDF5 file ({e})") from None
    env = f"{attrs['domain_name']}-{attrs['task_name']}"
    if env != item.env:
        raise DatasetError(f"{path}: its root attributes say {env}, the file name says {item.env}")
    if item.budget is not None and count != item.budget:
        raise DatasetError(f"{path}: {count} trajectories, a labeled-1000x{item.budget} set holds {item.budget}")


def fetch(item: Item, timeout: float, retries: int) -> None:
    """Downloads item.url into item.partial, continuing it (HTTP range), up to `retries` retries after a lost
    connection; then stops with the .partial kept for the next run."""
    attempt = 0
    while True:
        have = item.have
        if item.size is not None and have >= item.size:
            if have == item.size:
                return
            item.partial.unlink()  # longer than the file, so not a prefix of it: start over
            continue
        request = urllib.request.Request(item.url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                if r.status != 206:  # the server sends the whole file: start over
                    have = 0
                total = _total_size(r, have)
                if item.size is None:
                    item.size = total
                elif total is not None and total != item.size:
                    raise DownloadError(
                        f"{item.url}: the server now announces {total} bytes, before {item.size}; run again"
                    )
                bar = tqdm(desc=item.dest.name, total=item.size, initial=have, **BYTES_BAR)
                with open(item.partial, "ab" if have else "wb") as f, bar:
                    while chunk := r.read(CHUNK):
                        f.write(chunk)
                        bar.update(len(chunk))
            if item.size is None or item.partial.stat().st_size == item.size:
                return
            raise ConnectionError("the connection closed before the end of the file")
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # the .partial is at least as long as the file: start over
                item.partial.unlink()
                continue
            raise DownloadError(f"{item.url}: HTTP {e.code} {e.reason} (for {item.dest.name})") from None
        except (OSError, http.client.HTTPException) as e:  # URLError, a lost connection, a timeout, a cut read
            if isinstance(e, urllib.error.URLError) and not have and attempt == 0:
                raise DownloadError(f"{item.url}: cannot be reached ({e.reason})") from None
            attempt += 1
            got = item.have
            if attempt > retries:
                raise DownloadError(
                    f"{item.url}: interrupted at {human(got)} of {human(item.size)} ({e}); {item.partial} is kept: "
                    "run the same command to continue"
                ) from None
            print(f"{item.dest.name}: {e}; continuing from {human(got)} ({attempt}/{retries})", file=sys.stderr)
            time.sleep(min(30.0, 2.0**attempt / 4))


def _total_size(r, have: int) -> int | None:
    """The file's size from a 200 (Content-Length) or a 206 answer (Content-Range: bytes a-b/total)."""
    if r.status == 206:
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", r.headers.get("Content-Range", ""))
        if m is None or int(m[1]) != have:
            raise DownloadError(f"{r.url}: the server answered a range request with {r.headers.get('Content-Range')}")
        return None if m[3] == "*" else int(m[3])
    length = r.headers.get("Content-Length")
    return int(length) if length is not None else None


def download(item: Item, timeout: float, retries: int) -> None:
    """Fetches one file (resuming its .partial), verifies it and renames it into place."""
    fetch(item, timeout, retries)
    got = item.have
    if item.size is not None and got != item.size:
        raise DownloadError(f"{item.partial}: {got} bytes, the server announced {item.size}; run again to continue")
    try:
        check_dataset(item.partial, item)
    except (DatasetError, MissingKeyError) as e:
        item.partial.unlink()
        raise DownloadError(f"{e}; the download was removed, run the same command to fetch it again") from None
    item.partial.replace(item.dest)
    print(f"{item.dest}: {human(got)}, checked")


def describe(item: Item) -> str:
    """One line of the plan: destination, released name, size (and what a .partial holds already)."""
    size = human(item.size) if item.size is not None else f"size unknown ({item.size_note})"
    partial = f", {human(item.have)} in {item.partial.name}" if item.partial.exists() else ""
    return f"{item.dest}  <-  {item.url.rsplit('/', 1)[-1]}  {size}{partial}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    envs = "cheetah-run walker-run hopper-hop humanoid-walk, or all"
    parser.add_argument("--env", nargs="+", required=True, help=envs)
    parser.add_argument("--setting", nargs="+", choices=[*SETTINGS, "both"], default=["distractors"])
    parser.add_argument("--what", nargs="+", choices=WHAT, default=list(WHAT), help="default: all three")
    parser.add_argument("--budgets", nargs="+", type=int, default=None, help="labeled sets to fetch (default: all)")
    parser.add_argument("--out", default="data", help="output folder (vanilla sets go to <out>/vanilla)")
    parser.add_argument("--links", default=str(LINKS), help="the release's list of URLs")
    parser.add_argument("--dry_run", action="store_true", help="list names and sizes, fetch nothing")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds without an answer before giving up")
    parser.add_argument("--retries", type=int, default=5, help="times a lost connection is continued")
    args = parser.parse_args(argv)
    settings = list(SETTINGS) if "both" in args.setting else args.setting
    out = Path(args.out)
    try:
        try:
            lines = [line.strip() for line in Path(args.links).read_text().splitlines()]
        except OSError as e:
            raise DownloadError(f"cannot read the links file {args.links}: {e.strerror or e}") from None
        items = [parse_link(url, out) for url in lines if url and not url.startswith("#")]  # one URL a line
        items = select(items, args.env, settings, args.what, args.budgets)
        todo = [i for i in items if not i.dest.exists()]
        announced_sizes(todo, args.timeout)
        for item in items:
            print(describe(item) if item in todo else f"{item.dest}: present, skipped")
        if todo:
            known = [i.size for i in todo if i.size is not None]
            total = human(sum(known)) if known else "size unknown"
            unknown = f" + {len(todo) - len(known)} of unknown size" if known and len(known) < len(todo) else ""
            print(f"{len(todo)} file(s) to fetch: {total}{unknown}")
        if args.dry_run or not todo:
            return 0
        for item in todo:
            item.dest.parent.mkdir(parents=True, exist_ok=True)
        check_free_space(todo)
        for item in todo:
            download(item, args.timeout, args.retries)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the .partial files are kept; run the same command to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
