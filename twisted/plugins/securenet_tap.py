# The twistd plugin: `twistd securenet`.  Only a pointer into the package;
# twisted/plugins has no __init__.py on purpose (docs/architecture.md).
from twisted.application.service import ServiceMaker

securenet = ServiceMaker(
    "securenet",
    "securenet.tap",
    "Serve an application over mutually-authenticated, pinned TLS with twisted.cred authentication.",
    "securenet",
)
