#!/usr/bin/env python3
"""A CycloneDX 1.5 SBOM (JSON) of what the release binary is built from.

The components are exactly the packages `cargo tree` resolves for the
shipped target with normal (not dev, not build-only) edges and the release
build's features: what is compiled into `ctr-relay`. Each carries its purl,
licence expression, the SHA-256 that Cargo.lock pins, and its repository;
`dependencies` is their graph. Usage:

    scripts/sbom.py [--target TRIPLE] [--output FILE] [--check]

`--check` validates the written file against the CycloneDX 1.5 JSON schema
(cyclonedx-python-lib) and that it names every crate of `cargo tree` once.
"""

import argparse
import datetime
import json
import pathlib
import subprocess
import sys
import tomllib
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent


def cargo(*args):
    return subprocess.run(
        ["cargo", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def shipped(target):
    """(name, version) of every package in the binary, and the edges."""
    text = cargo(
        "tree", "--locked", "--edges", "normal", "--target", target,
        "--prefix", "depth", "--format", "{p}", "--no-dedupe",
    )
    packages, edges, stack = set(), set(), []
    for line in text.splitlines():
        digits = len(line) - len(line.lstrip("0123456789"))
        if digits == 0:
            continue
        depth = int(line[:digits])
        name, version = line[digits:].split()[:2]
        node = (name, version.lstrip("v"))
        packages.add(node)
        del stack[depth:]
        if stack:
            edges.add((stack[-1], node))
        stack.append(node)
    return packages, edges


def purl(name, version):
    return f"pkg:cargo/{name}@{version}"


def build(target):
    metadata = json.loads(cargo("metadata", "--locked", "--format-version", "1"))
    by_id = {(p["name"], p["version"]): p for p in metadata["packages"]}
    lock = tomllib.loads((ROOT / "Cargo.lock").read_text())
    checksums = {
        (p["name"], p["version"]): p.get("checksum") for p in lock["package"]
    }
    packages, edges = shipped(target)
    root = next(p for p in metadata["packages"] if p["name"] == "ctr-relay")
    root_key = (root["name"], root["version"])

    def component(key, kind):
        package = by_id[key]
        entry = {
            "type": kind,
            "bom-ref": purl(*key),
            "name": key[0],
            "version": key[1],
            "purl": purl(*key),
        }
        if package.get("description"):
            entry["description"] = " ".join(package["description"].split())
        if package.get("license"):
            entry["licenses"] = [{"expression": package["license"].replace("/", " OR ")}]
        if checksums.get(key):
            entry["hashes"] = [{"alg": "SHA-256", "content": checksums[key]}]
        if package.get("repository"):
            entry["externalReferences"] = [{"type": "vcs", "url": package["repository"]}]
        return entry

    depends = {}
    for parent, child in edges:
        depends.setdefault(parent, set()).add(child)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.datetime.now(datetime.timezone.utc)
            .replace(microsecond=0)
            .isoformat()
            .replace("+00:00", "Z"),
            "tools": {"components": [{"type": "application", "name": "scripts/sbom.py"}]},
            "component": component(root_key, "application"),
            "properties": [{"name": "cargo:target", "value": target}],
        },
        "components": [
            component(key, "library") for key in sorted(packages) if key != root_key
        ],
        "dependencies": [
            {"ref": purl(*key), "dependsOn": sorted(purl(*c) for c in depends.get(key, ()))}
            for key in sorted(packages)
        ],
    }


def check(path, target):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    text = path.read_text()
    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
    if error is not None:
        sys.exit(f"FAIL: {path} is not valid CycloneDX 1.5: {error}")
    bom = json.loads(text)
    listed = {(c["name"], c["version"]) for c in bom["components"]}
    packages, _ = shipped(target)
    expected = {p for p in packages if p[0] != "ctr-relay"}
    if listed != expected:
        sys.exit(f"FAIL: the SBOM and cargo tree differ: {sorted(listed ^ expected)}")
    unlicensed = [c["name"] for c in bom["components"] if "licenses" not in c]
    unhashed = [c["name"] for c in bom["components"] if "hashes" not in c]
    if unlicensed or unhashed:
        sys.exit(f"FAIL: without a licence {unlicensed}, without a hash {unhashed}")
    print(
        f"ok: {path}: CycloneDX 1.5, {len(listed)} components (every crate of the "
        f"{target} build, each with its licence and Cargo.lock's SHA-256), "
        f"{sum(len(d['dependsOn']) for d in bom['dependencies'])} dependency edges"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="x86_64-unknown-linux-musl")
    parser.add_argument("--output", default="target/ctr-relay.cdx.json")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    output = ROOT / args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(build(args.target), indent=2) + "\n")
    print(f"wrote {output}")
    if args.check:
        check(output, args.target)


if __name__ == "__main__":
    main()
