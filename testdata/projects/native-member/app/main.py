import cext


def handler(event, context):
    return {"answer": cext.answer()}
