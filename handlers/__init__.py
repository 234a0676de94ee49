"""What each forge event means for kernel-agent: one router per feature, composed here."""

from bot.events.router import Router
from handlers import comments, pull_request, push

router = Router(push.router, pull_request.router, comments.router)
