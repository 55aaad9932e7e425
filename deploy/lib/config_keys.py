#!/usr/bin/env python3
"""Compares each service's configuration keys, as its binary prints them
(`<svc> config keys`: `key<TAB>ENV_VAR<TAB>default-json` per line), with

  * the operations guide (deploy/README.md): the table between
    `<!-- config-keys:<svc>:begin -->` and `<!-- config-keys:<svc>:end -->`, whose rows are
    | `key` | `ENV_VAR` | `default-json` | description |
    Every key of the code must be documented with the same variable and default, and every
    documented key must exist in the code;
  * the config files shipped in Kubernetes (deploy/k8s/base/<svc>/config.toml) and in the
    image (deploy/docker/<svc>.toml): every key they set must exist (the services refuse
    unknown keys, exit 64);
  * the `<PREFIX>*` environment variables set anywhere under deploy/k8s/ and in the
    Dockerfiles: every one must name a key (`<PREFIX>CONFIG`, the file itself, excepted).

    config_keys.py SERVICE KEYS_FILE     KEYS_FILE holds the binary's output
Exits 1 on any difference, listing each.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*`([^`]+)`\s*\|\s*`(.*?)`\s*\|")


def code_keys(path: Path) -> dict[str, tuple[str, str]]:
    keys = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise SystemExit(f"unexpected `config keys` line (want key<TAB>ENV<TAB>default): {line!r}")
        keys[parts[0]] = (parts[1], parts[2])
    return keys


def guide_keys(service: str) -> dict[str, tuple[str, str]]:
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    begin, end = f"<!-- config-keys:{service}:begin -->", f"<!-- config-keys:{service}:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"deploy/README.md has no {begin} ... {end} table")
    section = text[text.index(begin) : text.index(end)]
    keys = {}
    for line in section.splitlines():
        m = ROW.match(line)
        if m:
            keys[m.group(1)] = (m.group(2), m.group(3))
    return keys


def toml_keys(value: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in value.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.extend(toml_keys(v, key + "."))
        else:
            out.append(key)
    return out


def known(key: str, keys: dict[str, tuple[str, str]]) -> bool:
    # A key whose default is an empty map ({}) accepts entries below it.
    return key in keys or any(key.startswith(k + ".") and d == "{}" for k, (_, d) in keys.items())


def main(service: str, keys_file: str) -> int:
    prefix = service.upper().replace("-", "_") + "_"
    errors: list[str] = []
    code = code_keys(Path(keys_file))
    if not code:
        errors.append(f"`{service} config keys` printed no keys")
    guide = guide_keys(service)
    print(f"{service}: {len(code)} keys in the code, {len(guide)} in deploy/README.md")

    for key, (env, default) in sorted(code.items()):
        if key not in guide:
            errors.append(f"{key}: in the code, missing from deploy/README.md (env {env}, default {default})")
            continue
        g_env, g_default = guide[key]
        if g_env != env:
            errors.append(f"{key}: deploy/README.md says env {g_env}, the code says {env}")
        if g_default != default:
            errors.append(f"{key}: deploy/README.md says default {g_default}, the code says {default}")
    for key in sorted(set(guide) - set(code)):
        errors.append(f"{key}: documented in deploy/README.md, not in the code")

    for config in (DEPLOY / "k8s" / "base" / service / "config.toml", DEPLOY / "docker" / f"{service}.toml"):
        if not config.is_file():
            errors.append(f"{config.relative_to(DEPLOY.parent)}: missing")
            continue
        for key in toml_keys(tomllib.loads(config.read_text(encoding="utf-8"))):
            if not known(key, code):
                errors.append(f"{key}: set in {config.relative_to(DEPLOY.parent)}, not a key of the code (exit 64)")
        print(f"{service}: checked {config.relative_to(DEPLOY.parent)}")

    envs = {env for env, _ in code.values()}
    files = sorted((DEPLOY / "k8s").rglob("*.yaml")) + sorted((DEPLOY / "docker").glob("*Dockerfile"))
    pattern = re.compile(rf"\b({prefix}[A-Z0-9_]+)\b")
    for f in files:
        # Comment lines may name variables that are deliberately not set.
        text = "\n".join(l for l in f.read_text(encoding="utf-8").splitlines() if not l.lstrip().startswith("#"))
        for var in sorted(set(pattern.findall(text))):
            if var != f"{prefix}CONFIG" and var not in envs:
                errors.append(f"{var}: set in {f.relative_to(DEPLOY.parent)}, not a config variable of the code")
    print(f"{service}: checked {prefix}* variables in {len(files)} files under deploy/")

    for e in errors:
        print(f"  DIFFERENCE {e}")
    if errors:
        print(f"{service}: {len(errors)} difference(s)")
        return 1
    print(f"{service}: code, guide and manifests agree")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
