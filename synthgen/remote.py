"""``synthgen generate --server URL``: run a job on a server, and write its images to a folder or to
WebDataset tar shards, resumably.

The out folder keeps ``.synthgen-job.json``: the job's id and parameters, and how far the download
got (every sample before ``next_index`` is on disk, with its line in ``manifest.jsonl``). Running the
same command again reuses the job while the server still has it, or else creates the same job again
(an image is a pure function of model, seed, index and truncation), and asks only for the samples
still missing. Images and shards are written under a temporary name and renamed when complete, so an
interrupted run never leaves a partial file.

``--layout imagefolder`` writes the Hugging Face ImageFolder layout instead (synthgen/core/imagefolder.py):
the images and ``metadata.jsonl`` under ``train/``, and the job's dataset card as ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from synthgen.client import TAR_END, ConflictError, NotFoundError, Sample, SynthgenClient, SynthgenClientError
from synthgen.core import imagefolder
from synthgen.core.crowd import Crowd
from synthgen.core.files import write_atomically
from synthgen.core.imagefolder import LAYOUTS
from synthgen.core.images import DEFAULT_FORMAT, DEFAULT_QUALITY
from synthgen.core.jobs import JobStatus

log = logging.getLogger(__name__)

STATE_FILE = ".synthgen-job.json"
MANIFEST = "manifest.jsonl"
CHECKPOINT_S = 1.0  # how often the state file is brought up to date while downloading
CARD_WAIT_S = 60.0  # from the last image to the job's success, at most
_MEMBER = re.compile(r"^\d{8,}\.[a-z0-9]{1,8}$")


@dataclass(frozen=True)
class RemoteJob:
    """What to generate, and where to put it."""

    server: str
    count: int
    out: Path
    fmt: str = DEFAULT_FORMAT
    quality: int = DEFAULT_QUALITY
    shards: int | None = None
    seed: int | None = None  # None: the server picks one (it is kept in the state file)
    truncation: float | None = None
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    crowd: Crowd = field(default_factory=Crowd)
    layout: str = "files"
    labels: bool = True  # False: the server's classifier does not label the images

    def params(self) -> dict[str, Any]:
        """The parameters a re-run must repeat to resume (the server and the key may change). The crowd and
        the layout are there only when given, so the state files of plain jobs stay as they were."""
        params = {
            "count": self.count, "seed": self.seed, "model": self.model, "truncation": self.truncation,
            "format": self.fmt, "quality": self.quality, "shards": self.shards, **self.crowd.to_dict(),
        }  # fmt: skip
        if self.layout != LAYOUTS[0]:
            params["layout"] = self.layout
        if not self.labels:
            params["labels"] = False
        return params


@dataclass
class JobState:
    """The state file: the job, and a consistent point of the download to resume from."""

    params: dict[str, Any]
    server: str = ""
    job_id: str = ""
    seed: int | None = None  # as the server chose it
    model: str | None = None  # name@version, as the server resolved it
    sha256: str | None = None  # of the model package, from the first sample
    next_index: int = 0  # every sample before it is on disk
    manifest_bytes: int = 0  # manifest.jsonl holds exactly these bytes for them
    part_bytes: int = 0  # and the shard being written (shard mode) these

    @classmethod
    def load(cls, out: Path) -> JobState | None:
        path = out / STATE_FILE
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path} is not a synthgen job state file ({exc}); delete it to start over") from exc

    def save(self, out: Path) -> None:
        write_atomically(out / STATE_FILE, json.dumps(asdict(self), indent=1).encode())


def _open_at(path: Path, size: int) -> IO[bytes]:
    """Open a file for appending after its first ``size`` bytes (which must be there); drop the rest."""
    f = open(path, "r+b" if path.exists() else "w+b")  # noqa: SIM115 (the writer closes it)
    if f.seek(0, os.SEEK_END) < size:
        f.close()
        raise ValueError(f"{path} is shorter than {STATE_FILE} records; delete {STATE_FILE} to start over")
    f.truncate(size)
    f.seek(size)
    return f


class _Writer:
    """Writes samples in index order, with their manifest lines, and checkpoints the state file."""

    manifest_name = MANIFEST

    def __init__(self, out: Path, state: JobState) -> None:
        self.out, self.state = out, state
        self.manifest = _open_at(self.images / self.manifest_name, state.manifest_bytes)
        # (next_index, manifest bytes, part bytes) after the last whole sample, set in one assignment
        self.mark = (state.next_index, state.manifest_bytes, state.part_bytes)
        self._saved_at = time.monotonic()

    @property
    def next_index(self) -> int:
        return self.mark[0]

    @property
    def images(self) -> Path:
        """The folder of the images (or shards) and of the manifest."""
        return self.out

    def record(self, where: dict[str, str], meta: dict[str, Any]) -> dict[str, Any]:
        """The manifest line of a sample: where it was stored, and its JSON."""
        return {**where, **meta}

    def write(self, sample: Sample) -> None:
        meta = sample.meta
        self._check_package(meta)
        where = self._store(sample)
        self.manifest.write(json.dumps(self.record(where, meta), separators=(",", ":")).encode() + b"\n")
        self.mark = (sample.index + 1, self.manifest.tell(), self._part_bytes())
        self._finish_sample(sample.index)
        if time.monotonic() - self._saved_at >= CHECKPOINT_S:
            self.checkpoint()

    def _check_package(self, meta: dict[str, Any]) -> None:
        """Every image must come from one model package (a job recreated elsewhere could use another)."""
        if self.state.sha256 is None:
            self.state.sha256 = meta.get("sha256")
        elif meta.get("sha256") != self.state.sha256:
            raise SynthgenClientError(
                f"the server's {meta.get('model')} (sha256 {meta.get('sha256')}) is not the package of the images "
                f"already in {self.out} (sha256 {self.state.sha256}); use another --out"
            )

    def checkpoint(self) -> None:
        self.manifest.flush()
        self._flush()
        self.state.next_index, self.state.manifest_bytes, self.state.part_bytes = self.mark
        self.state.save(self.out)
        self._saved_at = time.monotonic()

    def close(self) -> None:
        self.checkpoint()
        self.manifest.close()
        self._flush(close=True)

    def _store(self, sample: Sample) -> dict[str, str]:
        raise NotImplementedError

    def _part_bytes(self) -> int:
        return 0

    def _finish_sample(self, index: int) -> None:
        pass

    def _flush(self, close: bool = False) -> None:
        pass


class FolderWriter(_Writer):
    """``{key}.{ext}`` files, each written to a temporary name and renamed."""

    def __init__(self, out: Path, state: JobState) -> None:
        super().__init__(out, state)
        for stale in self.images.glob(".*.tmp"):
            stale.unlink()

    def _store(self, sample: Sample) -> dict[str, str]:
        names = []
        for name, data in sample.files.items():
            if not _MEMBER.match(name):
                raise SynthgenClientError(f"unexpected member name {name[:80]!r} in the result")
            write_atomically(self.images / name, data)
            names.append(name)
        return {"file": names[0]}


class ImageFolderWriter(FolderWriter):
    """The Hugging Face ImageFolder layout: images and ``metadata.jsonl`` under ``train/``."""

    manifest_name = imagefolder.METADATA

    def __init__(self, out: Path, state: JobState) -> None:
        (out / imagefolder.SPLIT).mkdir(parents=True, exist_ok=True)
        super().__init__(out, state)

    @property
    def images(self) -> Path:
        return self.out / imagefolder.SPLIT

    def record(self, where: dict[str, str], meta: dict[str, Any]) -> dict[str, Any]:
        return imagefolder.metadata_record(where["file"], meta)


def shard_bounds(count: int, shards: int) -> list[tuple[int, int]]:
    """[start, stop) of each shard: the index range split as evenly as possible."""
    return [(i * count // shards, (i + 1) * count // shards) for i in range(shards)]


class ShardWriter(_Writer):
    """``shard-00000.tar`` ...: each one written as ``.shard-00000.tar.part`` and renamed when complete."""

    part: IO[bytes] | None

    def __init__(self, out: Path, state: JobState, count: int, shards: int) -> None:
        self.out, self.bounds, self.part = out, shard_bounds(count, shards), None
        done = [shard for shard, (_, stop) in enumerate(self.bounds) if stop <= state.next_index]
        for shard in done:
            self._rename_if_left(shard)
        self.shard = len(done)  # the shard to continue
        super().__init__(out, state)
        if self.shard < len(self.bounds):
            try:
                self.part = _open_at(self._part_path(self.shard), state.part_bytes)
            except BaseException:
                self.manifest.close()
                raise

    def _name(self, shard: int) -> str:
        return f"shard-{shard:05d}.tar"

    def _part_path(self, shard: int) -> Path:
        return self.out / f".{self._name(shard)}.part"

    def _rename_if_left(self, shard: int) -> None:
        """A complete shard is renamed after the state records it, so a kill may leave it to rename."""
        if self._part_path(shard).exists():
            os.replace(self._part_path(shard), self.out / self._name(shard))
        elif not (self.out / self._name(shard)).exists():
            raise ValueError(f"{self.out / self._name(shard)} is missing; delete {STATE_FILE} to start over")

    def _store(self, sample: Sample) -> dict[str, str]:
        if self.part is None:
            raise SynthgenClientError(f"sample {sample.index} is past the last shard")
        self.part.write(sample.raw)
        return {"shard": self._name(self.shard)}

    def _part_bytes(self) -> int:
        return self.part.tell() if self.part is not None else 0

    def _finish_sample(self, index: int) -> None:
        if index + 1 < self.bounds[self.shard][1] or self.part is None:
            return
        self.part.write(TAR_END)
        self.part.close()
        self.part = None
        self.mark = (*self.mark[:2], 0)  # the next shard starts empty
        self.checkpoint()
        os.replace(self._part_path(self.shard), self.out / self._name(self.shard))
        if self.shard + 1 < len(self.bounds):
            self.shard += 1
            self.part = _open_at(self._part_path(self.shard), 0)

    def _flush(self, close: bool = False) -> None:
        if self.part is not None:
            self.part.flush()
            if close:
                self.part.close()


def _load_state(job: RemoteJob) -> JobState:
    state = JobState.load(job.out)
    if state is None:
        return JobState(params=job.params())
    if state.params != job.params():
        differ = sorted(k for k in job.params() if job.params()[k] != state.params.get(k))
        raise ValueError(
            f"{job.out} holds another job (it differs in {', '.join(differ)}); "
            f"use another --out, or delete {job.out / STATE_FILE} to start over"
        )
    return state


def _create_job(client: SynthgenClient, job: RemoteJob, state: JobState) -> None:
    seed = state.seed if state.seed is not None else job.seed
    created = client.create_job(
        job.count, seed=seed, model=state.model or job.model, truncation=job.truncation, format=job.fmt, quality=job.quality,
        labels=job.labels, **job.crowd.to_dict(),
    )  # fmt: skip
    state.server, state.job_id, state.seed, state.model = job.server, created.id, created.seed, created.model
    state.save(job.out)
    log.info("job %s: %d images of %s, seed %d", created.id, created.count, created.model, created.seed)


def _ensure_job(client: SynthgenClient, job: RemoteJob, state: JobState) -> None:
    """Reuse the state's job while the server still has it; else create the same job again."""
    if state.job_id and state.server == job.server:
        try:
            if not JobStatus(client.job(state.job_id).status).unusable:
                log.info("resuming job %s at sample %d of %d", state.job_id, state.next_index, job.count)
                return
        except NotFoundError:
            pass
        log.info("job %s is gone or stopped on the server; creating it again (seed %s)", state.job_id, state.seed)
    _create_job(client, job, state)


def _download(client: SynthgenClient, job: RemoteJob, state: JobState, writer: _Writer) -> None:
    recreated = False
    with tqdm(total=job.count, initial=writer.next_index, unit="img", desc="downloading", smoothing=0.1) as bar:
        while writer.next_index < job.count:
            try:
                for sample in client.iter_samples(state.job_id, writer.next_index, job.count):
                    writer.write(sample)
                    bar.update(1)
            except (NotFoundError, ConflictError) as exc:  # expired, or failed on the server: once more
                if recreated:
                    raise
                log.warning("job %s: %s; creating it again", state.job_id, exc.message)
                _create_job(client, job, state)
                recreated = True


def _writer(job: RemoteJob, state: JobState) -> _Writer:
    if job.shards:
        return ShardWriter(job.out, state, job.count, job.shards)
    return ImageFolderWriter(job.out, state) if job.layout == "imagefolder" else FolderWriter(job.out, state)


def _card_path(job: RemoteJob) -> Path | None:
    """Where the job's dataset card goes (the ImageFolder layout's README.md), or None."""
    return job.out / imagefolder.CARD if job.layout == "imagefolder" else None


def _write_card(client: SynthgenClient, job: RemoteJob, state: JobState) -> None:
    """The card counts every image, so the server has it once the job has succeeded (shortly after its last image)."""
    card = _card_path(job)
    if card is None:
        return
    finished = client.wait(state.job_id, poll_interval=0.2, timeout=CARD_WAIT_S)
    if finished.status != JobStatus.SUCCEEDED:
        raise SynthgenClientError(f"job {state.job_id} is {finished.status}: it has no dataset card")
    write_atomically(card, client.card(state.job_id).encode("utf-8"))


def _summary(job: RemoteJob, state: JobState, writer: _Writer) -> str:
    layout = f"{job.shards} shards" if job.shards else "files" if job.layout == LAYOUTS[0] else "a Hugging Face ImageFolder"
    listed = writer.images.relative_to(job.out) / writer.manifest_name
    return f"{job.count} images of {state.model} (seed {state.seed}) in {job.out}/ as {layout}, listed in {listed}\n"


def generate_remote(job: RemoteJob) -> int:
    """Generate ``job`` on its server into ``job.out``, resuming whatever a previous run left."""
    job.out.mkdir(parents=True, exist_ok=True)
    state = _load_state(job)
    card = _card_path(job)
    if state.job_id and state.next_index >= job.count and (card is None or card.exists()):
        sys.stdout.write(f"all {job.count} images are already in {job.out}/\n")
        return 0
    with SynthgenClient(job.server, api_key=job.api_key) as client:
        _ensure_job(client, job, state)
        writer = _writer(job, state)
        try:
            _download(client, job, state, writer)
        except KeyboardInterrupt:
            sys.stderr.write(f"interrupted at {writer.next_index}/{job.count}; run the same command again to resume\n")
            raise
        finally:
            writer.close()
        _write_card(client, job, state)
    sys.stdout.write(_summary(job, state, writer))
    return 0


def generate_from_args(args: argparse.Namespace, crowd: Crowd, count: int) -> int:
    """``synthgen generate --server``; API errors become one line on stderr and exit status 2."""
    if args.shards is not None and args.shards > count:
        raise ValueError(f"--shards must be at most --count ({count}), got {args.shards}")
    if args.shards is not None and args.layout != LAYOUTS[0]:
        raise ValueError(f"--shards writes tar shards; it does not go with --layout {args.layout}")
    job = RemoteJob(
        server=args.server, count=count, out=Path(args.out), fmt=args.format, quality=args.quality,
        shards=args.shards, seed=args.seed, truncation=args.truncation, model=args.model,
        api_key=args.api_key or os.environ.get("SYNTHGEN_API_KEY") or None, crowd=crowd, layout=args.layout,
        labels=not args.no_labels,
    )  # fmt: skip
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is too much beside the progress bar
    try:
        return generate_remote(job)
    except SynthgenClientError as exc:
        sys.stderr.write(f"synthgen generate: error: {exc}\n")
        return 2
