"""`flashcall callbacks`: the receiver of provider status callbacks. app.py is the ASGI
application and its server; protocol.py the HTTP/1.1 protocol with the deadlines uvicorn
lacks."""
