"""``python -m mimmx.deploy --bundle DIR -i DICOM_FOLDER -o OUT``: run the MONAI Deploy app on one study folder.

The input is checked first (:func:`mimmx.deploy.dicom_inputs.check_dicom_folder`): bad input ends with one line
naming the file and what was expected, exit status 2, and nothing written. Needs monai-deploy-app-sdk.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mimmx.errors import MimmxError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mimmx.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="exported bundle folder (mimmx export-bundle)")
    parser.add_argument("-i", "--input", required=True, help="folder of DICOM files (one study)")
    parser.add_argument("-o", "--output", required=True, help="folder for result.json and the DICOM SR")
    args = parser.parse_args(argv)
    try:
        from mimmx.deploy.app import BundleClassifierApp
        from mimmx.deploy.dicom_inputs import check_dicom_folder, modalities_for

        app = BundleClassifierApp(args.bundle, args.input, args.output)
        check_dicom_folder(args.input, modalities_for(app.classifier.modality))
        app.run()
        if app.failure is not None:
            raise app.failure
    except (MimmxError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = Path(args.output) / "result.json"
    if not result.is_file():  # the graph logged an operator's failure instead of raising it
        print(f"error: the application wrote no {result}; see the log above.", file=sys.stderr)
        return 1
    print(json.dumps(json.loads(result.read_text())["results"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
