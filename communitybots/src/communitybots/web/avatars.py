"""Agent avatars as SVG: a disc in the agent's colour with a built-in icon drawn as
paths (``spec.AVATAR_ICONS``), so they render on any device, with or without an emoji
font; an avatar of up to 4 characters is drawn as text on the disc."""

from __future__ import annotations

from html import escape

from communitybots.spec import AVATAR_ICONS, Agent

_W = 'fill="#fff"'
#: the glyph of each built-in icon on a 40×40 canvas; ``{c}`` is the agent's colour
ICONS: dict[str, str] = {
    "bot": (f'<rect x="11" y="14" width="18" height="14" rx="3" {_W}/>'
            '<circle cx="16.5" cy="21" r="2" fill="{c}"/><circle cx="23.5" cy="21" r="2" fill="{c}"/>'
            f'<rect x="19" y="9" width="2" height="5" {_W}/><circle cx="20" cy="9" r="1.8" {_W}/>'),
    "home": f'<path d="M9 21 L20 11 L31 21 H28 V30 H23 V24 H17 V30 H12 V21 Z" {_W}/>',
    "work": (f'<rect x="10" y="15" width="20" height="14" rx="2" {_W}/>'
             '<path d="M16 15 V12 H24 V15" stroke="#fff" stroke-width="2.5" fill="none"/>'),
    "health": f'<path d="M17 10 H23 V17 H30 V23 H23 V30 H17 V23 H10 V17 H17 Z" {_W}/>',
    "person": f'<circle cx="20" cy="15.5" r="5" {_W}/><path d="M10.5 30 C11 22 29 22 29.5 30 Z" {_W}/>',
    "chat": f'<path d="M10 12 H30 V25 H19 L13 30 V25 H10 Z" {_W}/>',
}
assert set(ICONS) == set(AVATAR_ICONS), "every icon the spec accepts is drawn"


def svg(agent: Agent) -> str:
    """The agent's avatar as an SVG document."""
    colour = agent.colour
    if agent.avatar in ICONS:
        glyph = ICONS[agent.avatar].replace("{c}", colour)
    else:
        size = 18 if len(agent.avatar) <= 2 else 12
        glyph = (f'<text x="20" y="{20 + size * 0.36:.1f}" text-anchor="middle" '
                 f'font-family="system-ui, sans-serif" font-size="{size}" font-weight="700" '
                 f'fill="#fff">{escape(agent.avatar)}</text>')
    return ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 40 40" width="40" height="40">'
            f'<title>{escape(agent.name)}</title>'
            f'<circle cx="20" cy="20" r="20" fill="{colour}"/>{glyph}</svg>')
