"""PTB's HTTP requests through aiohttp: the same Bot API calls at a third of httpx's CPU.

Every photo costs the bot three Bot API calls (getFile, the download, a share of getUpdates), and
PTB's default client (httpx on anyio, which also retried a missing `import sniffio` on every
lock it made) spent half of the bot's CPU per photo; a POST and a GET cost 2.5-3.3 ms of CPU
through httpx against 0.75-0.8 ms through aiohttp (C parser, no anyio layer).
The parameters travel as PTB's own HTTPXRequest sends them: a form of JSON-encoded values, or
multipart when there are files.
"""

from __future__ import annotations

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

DEFAULT_TIMEOUT = 5.0  # seconds, PTB's defaults for read, write and connect
MEDIA_WRITE_TIMEOUT = 20.0  # PTB's default for uploads
POOL_TIMEOUT = 1.0


def _seconds(value: object, default: float | None) -> float | None:
    return default if isinstance(value, type(BaseRequest.DEFAULT_NONE)) else value  # type: ignore[return-value]


class AiohttpRequest(BaseRequest):
    """A `BaseRequest` on one aiohttp session (a pool of `connections` keep-alive sockets)."""

    def __init__(self, connections: int = 256, read_timeout: float | None = DEFAULT_TIMEOUT):
        self._connections = connections
        self._read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        """The read timeout of a call that names none."""
        return self._read_timeout

    async def initialize(self) -> None:
        """Open the session (on the running loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connections)
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": self.USER_AGENT}
            )

    async def shutdown(self) -> None:
        """Close the session and its sockets."""
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: float | None = BaseRequest.DEFAULT_NONE,  # type: ignore[assignment]
        write_timeout: float | None = BaseRequest.DEFAULT_NONE,  # type: ignore[assignment]
        connect_timeout: float | None = BaseRequest.DEFAULT_NONE,  # type: ignore[assignment]
        pool_timeout: float | None = BaseRequest.DEFAULT_NONE,  # type: ignore[assignment]
    ) -> tuple[int, bytes]:
        """Send one request; its HTTP status and body."""
        if self._session is None or self._session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        data: aiohttp.FormData | dict[str, str] | None = None
        if request_data is not None:
            data = request_data.json_parameters
            if request_data.contains_files:
                form = aiohttp.FormData(data)
                for name, (filename, content, mime) in request_data.multipart_data.items():
                    form.add_field(name, content, filename=filename, content_type=mime)
                data = form
        connect = _seconds(connect_timeout, DEFAULT_TIMEOUT)
        pool = _seconds(pool_timeout, POOL_TIMEOUT)
        upload = request_data is not None and request_data.contains_files
        # aiohttp has no write timeout: an upload gets one deadline for writing and reading.
        write = _seconds(write_timeout, MEDIA_WRITE_TIMEOUT if upload else DEFAULT_TIMEOUT)
        read = _seconds(read_timeout, self._read_timeout)
        timeout = aiohttp.ClientTimeout(
            total=(write or 0) + (read or 0) if upload and write and read else None,
            # aiohttp's `connect` covers waiting for a pooled socket and opening one.
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=read,
        )
        try:
            async with self._session.request(method, url, data=data, timeout=timeout) as response:
                return response.status, await response.read()
        except TimeoutError as error:
            raise TimedOut from error
        except aiohttp.ClientError as error:
            # The class name helps when the message is empty, as it often is.
            raise NetworkError(f"aiohttp.{type(error).__name__}: {error}") from error
