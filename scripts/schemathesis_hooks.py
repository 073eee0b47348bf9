"""schemathesis hooks of scripts/api-check.sh: what JSON Schema cannot say exactly.

A sensor id is 1 to 256 *bytes* of UTF-8; the document's `maxLength: 256` counts
characters, so a string of 256 characters or fewer can still be over the limit (and is
rejected with 400, as CONTRACT.md says). Such a case is schema-valid but not a valid
request, so it is dropped before it is sent. Cases over 256 characters, which the schema
itself rules out, are kept: they are the negative tests of the limit.
"""

import schemathesis

MAX_SENSOR_ID_BYTES = 256


def _valid_by_schema_but_too_long(value):
    if not isinstance(value, str) or len(value) > MAX_SENSOR_ID_BYTES:
        return False
    return len(value.encode("utf-8", "surrogatepass")) > MAX_SENSOR_ID_BYTES


@schemathesis.hook
def filter_case(context, case):
    sensors = []
    if isinstance(case.path_parameters, dict):
        sensors.append(case.path_parameters.get("sensor"))
    if isinstance(case.body, list):
        sensors.extend(m.get("sensor") for m in case.body if isinstance(m, dict))
    return not any(_valid_by_schema_but_too_long(s) for s in sensors)
