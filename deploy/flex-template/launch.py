"""The Flex Template launcher's main (FLEX_TEMPLATE_PYTHON_PY_FILE): starts the pipeline
named by $BLOGFLOW_PIPELINE (set when the launcher image is built) with the template's
parameters, and returns once Dataflow has the job."""

import os
import sys

from blogflow.runners.flex_template import launch

if __name__ == "__main__":
    launch(os.environ["BLOGFLOW_PIPELINE"], sys.argv[1:])
