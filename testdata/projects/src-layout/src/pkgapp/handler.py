import six


def handler(event, context):
    return {"ok": True, "six": six.__version__}
