"""A grounded report for your own CFP and OCT images.

    grok-retina report --model outputs/quickstart/model --cfp fundus.jpg --oct bscan.png [--biomarkers b.json]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from processing.biomarkers import BiomarkerError, validate_biomarkers


@dataclass
class ReportArguments:
    model: str = field(metadata={"help": "A GROK folder or Hub id."})
    cfp: str | None = field(default=None, metadata={"help": "Colour fundus photograph."})
    oct: list[str] | None = field(default=None, metadata={"help": "OCT B-scan(s); several files make one volume."})
    biomarkers: str | None = field(default=None, metadata={"help": "JSON file of biomarker values (missing ones are measured)."})
    measure_missing: bool = field(default=True, metadata={"help": "Measure biomarkers the JSON does not give."})
    stream: bool = field(default=True, metadata={"help": "Print the report as it is generated."})
    json_out: str | None = field(default=None, metadata={"help": "Also write the structured report here."})
    max_new_tokens: int = field(default=512)
    device: str | None = field(default=None)


def _read_biomarkers(path: str) -> dict[str, float | None]:
    """The validated biomarkers of a ``--biomarkers`` JSON file; bad files exit with a message naming the flag."""
    flag = f"--biomarkers {path}"
    must = 'it must hold one JSON object mapping biomarker names to numbers, e.g. {"rnfl": 28.5}'
    try:
        given = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise SystemExit(f"grok-retina report: cannot read {flag} ({error.strerror or error}).") from None
    except ValueError as error:  # JSON syntax, or not UTF-8
        raise SystemExit(f"grok-retina report: {flag} is not valid JSON ({error}); {must}.") from None
    if not isinstance(given, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(given), "a number")
        raise SystemExit(f"grok-retina report: {flag} holds {kind}, not an object; {must}.")
    try:
        return validate_biomarkers(given, where=flag)
    except BiomarkerError as error:
        raise SystemExit(f"grok-retina report: {error}") from None


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(ReportArguments).parse_args_into_dataclasses(args=argv)
    from PIL import Image

    from grok_retina.evaluation.report import atomic_write_text
    from grok_retina.pipeline import GrokPipeline

    if args.cfp is None and not args.oct:
        raise SystemExit("grok-retina report: give --cfp and/or --oct image files.")
    given = _read_biomarkers(args.biomarkers) if args.biomarkers else None
    cfp = Image.open(args.cfp) if args.cfp else None
    scans = [Image.open(p) for p in args.oct or []]
    oct = (scans[0] if len(scans) == 1 else scans) if scans else None
    pipe = GrokPipeline.from_pretrained(args.model, device=args.device, max_new_tokens=args.max_new_tokens,
                                        measure_missing=args.measure_missing)
    values, source = pipe.biomarkers_for(cfp, oct, given)
    if args.stream:
        text = ""
        for chunk in pipe.stream(cfp=cfp, oct=oct, biomarkers=values, measure=False):
            print(chunk, end="", flush=True)
            text += chunk
        report = pipe.report(text.strip(), values, source)
    else:
        report = pipe(cfp=cfp, oct=oct, biomarkers=values, measure=False)
        print(report.text)
    check = report.verification
    print(f"\n\nLabel: {report.label}   grounding: {check.grounding:.2f}   unsupported numbers: {len(check.fabricated)}")
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps(report.to_dict(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
