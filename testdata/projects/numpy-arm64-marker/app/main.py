import numpy


def handler(event, context):
    return {"numpy": numpy.__version__}
