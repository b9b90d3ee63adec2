"""One build step on top of pyproject.toml: ship the top-level `tasks/` and `voices/` folders.

The project's layout keeps the shipped task YAMLs (with their bundled data) and voice pools
at the top of the repository. A wheel must carry them too, so building copies them into the
package as `biasbench/_shipped/tasks` and `biasbench/_shipped/voices`, where
`biasbench.paths.shipped_dir` finds them through importlib.resources. Editable installs skip
the copy and read the checkout's folders directly.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("tasks", "voices")


class BuildWithShippedFolders(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder in SHIPPED:
            source = Path(folder)
            for path in sorted(source.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    target = Path(self.build_lib, "biasbench", "_shipped", path)
                    self.mkpath(str(target.parent))
                    self.copy_file(str(path), str(target))


setup(cmdclass={"build_py": BuildWithShippedFolders})
