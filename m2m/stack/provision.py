"""Fetching and building the stack's programs, once per user and version.

Each artifact lives in its own directory under the cache directory and is complete only once
its stamp file exists, so an interrupted download is simply done again by the next ``up``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from m2m.stack.process import StackError

_CASSANDRA_POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>m2m.local</groupId>
  <artifactId>cassandra-runtime</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""

# nsq's own go.mod replaces go-svc with a fork; replace directives of a dependency are not
# honoured, so the build module must repeat it (and `go install pkg@version` cannot be used).
_GO_SVC_FORK = "github.com/mreiferson/go-svc v1.2.2-0.20210815184239-7a96e00010f6"
_NSQ_GO_MOD = """\
module m2m.local/nsq-build

go 1.21

require github.com/nsqio/nsq v{version}

replace github.com/judwhite/go-svc => {go_svc_fork}
"""

_NSQ_TOOLS_GO = """\
//go:build tools

package tools

import (
\t_ "github.com/nsqio/nsq/apps/nsqd"
\t_ "github.com/nsqio/nsq/apps/nsqlookupd"
)
"""

_STAMP = ".complete"


def require_tool(name: str, purpose: str) -> str:
    """The path of a program the stack needs, or a StackError saying which and why."""
    path = shutil.which(name)
    if path is None:
        raise StackError(f"'{name}' is not installed or not on PATH; it is needed to {purpose}")
    return path


def java_major_version(java: str) -> int:
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        raise StackError(f"cannot tell the version of {java}: {result.stderr.strip()}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


@dataclass(frozen=True)
class Artifact:
    """Something built or downloaded once into ``home``; ready once its stamp file exists."""

    home: Path
    tool: str
    purpose: str
    build: Callable[[Artifact, str], None]
    """Fills ``home`` using the tool found at the given path."""

    @property
    def ready(self) -> bool:
        return (self.home / _STAMP).exists()

    def ensure(self) -> None:
        if self.ready:
            return
        tool = require_tool(self.tool, self.purpose)
        self.home.mkdir(parents=True, exist_ok=True)
        self.build(self, tool)
        (self.home / _STAMP).touch()


def ensure_all(artifacts: Sequence[Artifact]) -> None:
    """Check every tool the missing artifacts need before the first long download starts."""
    for artifact in artifacts:
        if not artifact.ready:
            require_tool(artifact.tool, artifact.purpose)
    for artifact in artifacts:
        artifact.ensure()


def cassandra_artifact(cache_dir: Path, version: str) -> Artifact:
    """cassandra-all and its runtime dependencies, resolved by Maven, in ``home/lib``."""

    def build(artifact: Artifact, mvn: str) -> None:
        lib = artifact.home / "lib"
        (artifact.home / "pom.xml").write_text(_CASSANDRA_POM.format(version=version))
        shutil.rmtree(lib, ignore_errors=True)
        _run(
            [mvn, "-B", "-q", "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={lib}"],
            cwd=artifact.home,
            log=artifact.home / "mvn.log",
            what=f"resolving org.apache.cassandra:cassandra-all:{version} with Maven",
        )  # fmt: skip

    return Artifact(
        cache_dir / f"cassandra-{version}",
        "mvn",
        "download Apache Cassandra from Maven Central",
        build,
    )


def nsq_artifact(cache_dir: Path, version: str) -> Artifact:
    """The nsqd and nsqlookupd binaries, built with Go, in ``home/bin``."""

    def build(artifact: Artifact, go: str) -> None:
        home = artifact.home
        (home / "go.mod").write_text(_NSQ_GO_MOD.format(version=version, go_svc_fork=_GO_SVC_FORK))
        (home / "tools.go").write_text(_NSQ_TOOLS_GO)
        log = home / "go.log"
        log.unlink(missing_ok=True)
        env = {"GOBIN": str(home / "bin"), "GOFLAGS": "-mod=mod"}
        _run([go, "mod", "tidy"], cwd=home, log=log, what="resolving nsq's Go modules", env=env)
        _run(
            [go, "install", "github.com/nsqio/nsq/apps/nsqd",
             "github.com/nsqio/nsq/apps/nsqlookupd"],
            cwd=home,
            log=log,
            what=f"building nsqd and nsqlookupd v{version}",
            env=env,
        )  # fmt: skip

    return Artifact(cache_dir / f"nsq-{version}", "go", "build nsqd and nsqlookupd", build)


def _run(
    command: Sequence[str], cwd: Path, log: Path, what: str, env: dict[str, str] | None = None
) -> None:
    with open(log, "ab") as out:
        result = subprocess.run(
            list(command),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            check=False,
        )
    if result.returncode != 0:
        raise StackError(f"{what} failed (exit {result.returncode}); see {log}")
