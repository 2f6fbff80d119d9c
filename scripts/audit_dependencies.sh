#!/usr/bin/env bash
# Audit the locked dependencies for known vulnerabilities with pip-audit.
#
#   bash scripts/audit_dependencies.sh            # audit requirements.lock (written from .venv if missing)
#   bash scripts/audit_dependencies.sh --refresh  # re-lock from .venv first (pip freeze), then audit
#   AUDIT_SERVICE=osv bash scripts/audit_dependencies.sh   # ask OSV instead of PyPI
#
# pip-audit runs from its own virtual environment in .tools/audit, so that it and its dependencies are
# not part of what is audited. Exit status: 0 no known vulnerability, 1 vulnerabilities found,
# 3 pip-audit could not reach its vulnerability data for any package (so nothing was audited).
set -euo pipefail
cd "$(dirname "$0")/.."

LOCK=requirements.lock
VENV=${VENV:-.venv}
TOOL=.tools/audit
SERVICE=${AUDIT_SERVICE:-pypi}

if [[ "${1:-}" == "--refresh" || ! -f "$LOCK" ]]; then
    {
        echo "# The exact versions in the project's environment (make install), for the dependency audit."
        echo "# Regenerate with: bash scripts/audit_dependencies.sh --refresh"
        "$VENV/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check
    } > "$LOCK"
    echo "wrote $LOCK from $VENV ($(grep -vc '^#' "$LOCK") packages)"
fi

if [[ ! -x "$TOOL/bin/pip-audit" ]]; then
    python3 -m venv "$TOOL"
    "$TOOL/bin/python" -m pip install --quiet --disable-pip-version-check pip-audit 2>/dev/null
fi

report=$(mktemp)
errors=$(mktemp)
trap 'rm -f "$report" "$errors"' EXIT
# --no-deps --disable-pip: the lock is complete and pinned, so pip-audit needs no resolver and no venv.
# Its own exit status is ignored here: the JSON report says what was audited, found, and skipped.
"$TOOL/bin/pip-audit" --requirement "$LOCK" --no-deps --disable-pip --vulnerability-service "$SERVICE" \
    --progress-spinner off --format json --output "$report" 2> "$errors" || true

"$TOOL/bin/python" - "$report" "$SERVICE" "$errors" <<'EOF'
import json
import sys

path, service, errors = sys.argv[1:4]
try:
    deps = json.load(open(path))["dependencies"]
except (OSError, ValueError, KeyError):
    last = (open(errors).read().strip().splitlines() or ["no error message"])[-1]
    print(f"NOT AUDITED: pip-audit produced no report; it could not reach the {service} vulnerability service ({last[:300]})")
    sys.exit(3)
audited = [d for d in deps if "skip_reason" not in d]
skipped = [d for d in deps if "skip_reason" in d]
found = [(d["name"], d["version"], v["id"], ",".join(v.get("fix_versions", []))) for d in audited for v in d.get("vulns", [])]
print(f"pip-audit ({service}): {len(deps)} locked packages, {len(audited)} audited, {len(skipped)} skipped, "
      f"{len(found)} known vulnerabilities")
for name, version, vuln, fix in found:
    print(f"  {name} {version}: {vuln} (fixed in {fix or 'no release yet'})")
if not audited:
    reasons = sorted({d["skip_reason"].split(":")[0] for d in skipped})
    print(f"NOT AUDITED: pip-audit reached no vulnerability data for any package ({'; '.join(reasons)})")
    sys.exit(3)
for d in skipped:
    print(f"  skipped {d['name']}: {d['skip_reason']}")
sys.exit(1 if found else 0)
EOF
