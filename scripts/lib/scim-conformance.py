"""Runs python-scim's scim2-tester against a SCIM server: every discovery check and every
check of the resource types named (User and Group unless some are named). Prints each check
that did not pass, then one summary line, and exits 1 unless every check passed.

    python scim-conformance.py BASE_URL BEARER_TOKEN [RESOURCE_TYPE ...]
"""

import json
import sys
from collections import Counter

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import check_server
from scim2_tester.utils import Status

PASSING = {Status.SUCCESS, Status.COMPLIANT, Status.ACCEPTABLE}


def main() -> int:
    base_url, token = sys.argv[1], sys.argv[2]
    resource_types = sys.argv[3:] or ["User", "Group"]
    http = httpx2.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    client = SyncSCIMClient(http)
    results = check_server(client, resource_types=resource_types)
    statuses = Counter(result.status.name for result in results)
    passed = sum(1 for result in results if result.status in PASSING)
    for result in results:
        if result.status not in PASSING:
            print(
                f"{result.status.name} {result.resource_type or '-'} {result.title}: "
                f"{(result.reason or '').strip()}"
            )
    print(
        json.dumps(
            {
                "checks": len(results),
                "passed": passed,
                "resource_types": resource_types,
                "statuses": dict(statuses),
            },
            sort_keys=True,
        )
    )
    return 0 if results and passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
