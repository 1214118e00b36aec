"""Survey specification: a YAML file validated into pydantic models.

A survey is a team of chatbot agents (CommunityBots, Jiang et al., CSCW 2023, §3): each
agent owns a domain and an ordered list of topics; each topic has an opening line, main
questions, follow-up probes, a closing line and keywords (used for relevance scoring and
for recognising "can we talk about ..." requests). The ``policy`` section holds the
parameters of the Conversation and Topic Management engine (:mod:`communitybots.ctm`)
and the ``nlu`` section those of the language understanding (:mod:`communitybots.nlu`).

``load_survey(path)`` raises :class:`SpecError` with the YAML path of the offending field
and a one-line reason, e.g. ``agents[1].topics[0].probes: list should have at least 1 item``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "Agent",
    "FAQItem",
    "NLUConfig",
    "Panel",
    "Policy",
    "PostSurveyItem",
    "QuestionItem",
    "SpecError",
    "Survey",
    "Topic",
    "Tutorial",
    "load_survey",
    "parse_survey",
    "single_agent",
]

_ID = r"^[a-z][a-z0-9_\-]*$"
_HEX = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
#: built-in avatar icons, drawn as SVG (no emoji font needed): ``web/avatars.py``
AVATAR_ICONS: tuple[str, ...] = ("bot", "home", "work", "health", "person", "chat")


class SpecError(ValueError):
    """A survey specification is invalid; ``str(err)`` is ``"<yaml.path>: <reason>"``."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


def _nonempty_items(values: list[str]) -> list[str]:
    for i, v in enumerate(values):
        if not v:
            raise ValueError(f"item {i} is empty")
    return values


class Topic(_Model):
    """One topic of conversation owned by an agent.

    Attributes:
        id (str): unique across the survey (lowercase, digits, ``_``/``-``).
        title (str): shown on the topic badge.
        opening (str): said once when the topic starts.
        questions (list[str]): main questions, asked in order (at least one).
        probes (list[str]): follow-up probes ("Could you tell me more ...") used after
            answers to main questions; cycled through in order (at least one).
        closing (str): said when the topic ends normally.
        keywords (list[str]): words of the topic, for relevance and topic jumps.
        domain (str | None): the domain it belongs to when it is not its owner agent's
            (set by :func:`single_agent`); see :meth:`Survey.domain_of`.
    """

    id: str = Field(pattern=_ID)
    title: str = Field(min_length=1)
    opening: str = Field(min_length=1)
    questions: list[str] = Field(min_length=1)
    probes: list[str] = Field(min_length=1)
    closing: str = Field(min_length=1)
    keywords: list[str] = Field(default_factory=list)
    domain: str | None = None

    _check_questions = field_validator("questions", "probes", "keywords")(_nonempty_items)


class Agent(_Model):
    """A topic-expert chatbot.

    Attributes:
        id (str): unique agent id.
        name (str): shown on every bubble.
        domain (str): the domain it owns ("household"); participants may ask for it.
        colour (str): hex colour of its bubbles, ``#rrggbb`` or ``#rgb``.
        avatar (str): a built-in icon (``bot``, ``home``, ``work``, ``health``,
            ``person``, ``chat``: drawn as SVG, no emoji font needed) or up to 4
            characters (an emoji needs an emoji font on the participant's device).
        introduction (str): its self-introduction when it takes over.
        handover (str): said when it hands over to the next agent; ``{next}`` is replaced
            by the next agent's name.
        topics (list[Topic]): ordered topics (at least one).
    """

    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    domain: str = Field(min_length=1)
    colour: str = "#4a6fa5"
    avatar: str = Field(default="bot", min_length=1, max_length=6)
    introduction: str = Field(min_length=1)
    handover: str = "I'll hand you over to my colleague {next} now."
    topics: list[Topic] = Field(min_length=1)

    @field_validator("avatar")
    @classmethod
    def _avatar(cls, v: str) -> str:
        if v not in AVATAR_ICONS and len(v) > 4:
            raise ValueError(f"avatar must be one of {', '.join(AVATAR_ICONS)} or at most "
                             f"4 characters, got {v!r}")
        return v

    @field_validator("colour")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not _HEX.match(v):
            raise ValueError(f"colour must be a hex colour like #1f77b4, got {v!r}")
        return v


class QuestionItem(_Model):
    """A questionnaire item: asked before the chat (``pre_survey``: demographics) or
    after it (``post_survey``: satisfaction, engagement).

    Attributes:
        id (str): item id, unique across ``pre_survey`` and ``post_survey``.
        text (str): the statement or question.
        kind ("likert" | "choice" | "text" | "number"): a Likert scale of ``scale``
            points, one of ``options``, free text, or a number in [``min``, ``max``].
        required (bool): the form is refused until it is answered (default False).
        scale (int): Likert points (default 5; 2..11; likert only).
        anchors (list[str]): the words at the two ends of the Likert scale (default
            "Disagree", "Agree"; likert only).
        options (list[str]): the choices (at least two; choice only).
        min (float | None), max (float | None): the range of a number (number only).
        integer (bool): the number must be whole (default True; number only).
    """

    id: str = Field(pattern=_ID)
    text: str = Field(min_length=1)
    kind: Literal["likert", "choice", "text", "number"] = "likert"
    required: bool = False
    scale: int = Field(default=5, ge=2, le=11)
    anchors: list[str] = Field(default_factory=lambda: ["Disagree", "Agree"],
                               min_length=2, max_length=2)
    options: list[str] = Field(default_factory=list)
    min: float | None = None
    max: float | None = None
    integer: bool = True

    _check_options = field_validator("options", "anchors")(_nonempty_items)

    @model_validator(mode="after")
    def _fields_of_kind(self) -> QuestionItem:
        only = {"scale": "likert", "anchors": "likert", "options": "choice", "min": "number",
                "max": "number", "integer": "number"}
        for name, kind in only.items():
            # a stored specification names every field with its default: only a value
            # other than the default belongs to one kind
            default = QuestionItem.model_fields[name].get_default(call_default_factory=True)
            if self.kind != kind and getattr(self, name) != default:
                raise ValueError(f"{name} is only for kind {kind}, not {self.kind}")
        if self.kind == "choice":
            if len(self.options) < 2:
                raise ValueError("a choice item needs at least 2 options")
            if len(set(self.options)) != len(self.options):
                raise ValueError("options must be distinct")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is more than max ({self.max:g})")
        return self


#: the former name of :class:`QuestionItem`
PostSurveyItem = QuestionItem


class Panel(_Model):
    """A recruitment panel (Prolific, MTurk, a panel company) sending participants by
    link, e.g. ``/?PROLIFIC_PID=...&STUDY_ID=...&SESSION_ID=...``.

    Attributes:
        id_param (str): the query parameter holding the participant's panel id
            (default ``PROLIFIC_PID``); stored with the participant and exported.
        keep_params (list[str]): further parameters stored beside it (default
            ``STUDY_ID``, ``SESSION_ID``).
        completion_url (str): where a participant who came with a panel id goes after
            the questionnaire; ``{code}`` is replaced by the completion code, or the
            code is appended when the URL has no ``{code}``.
        completion_code (str): one code for everyone, as Prolific gives a study ("" =
            each participant's own random code).
    """

    id_param: str = Field(default="PROLIFIC_PID", pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
    keep_params: list[str] = Field(default_factory=lambda: ["STUDY_ID", "SESSION_ID"])
    completion_url: str = Field(pattern=r"^https?://\S+$")
    completion_code: str = Field(default="", pattern=r"^[A-Za-z0-9_\-]{0,64}$")

    @field_validator("keep_params")
    @classmethod
    def _param_names(cls, values: list[str]) -> list[str]:
        for v in values:
            if not re.match(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$", v):
                raise ValueError(f"{v!r} is not a query parameter name (letters, digits, _ and -)")
        return values

    def completion_link(self, code: str) -> str:
        """The completion URL carrying ``code``."""
        if "{code}" in self.completion_url:
            return self.completion_url.replace("{code}", code)
        return self.completion_url + code


class Tutorial(_Model):
    """What the page before the chat says, per condition (the team vs one chatbot).

    Attributes:
        multi (str): for the multi-agent team (the wizard condition sees it too).
        single (str): for the single chatbot.
    """

    multi: str = Field(min_length=1)
    single: str = Field(min_length=1)


class FAQItem(_Model):
    """An answer to a question participants ask the bot ("who sees my answers?").

    Attributes:
        id (str): item id.
        examples (list[str]): ways participants ask it (matched by TF-IDF similarity).
        answer (str): the reply; ``{agent}``, ``{survey}``, ``{topics_left}``,
            ``{minutes}`` (the policy's ``expected_minutes``) and ``{limit}`` (its
            ``max_minutes``) are filled in.
    """

    id: str = Field(pattern=_ID)
    examples: list[str] = Field(min_length=1)
    answer: str = Field(min_length=1)


class Policy(_Model):
    """Parameters of the CTM engine (:mod:`communitybots.ctm`).

    Attributes:
        low_quality_k (int): a run of this many low-quality answers in one topic switches
            to the next topic (default 2); a good answer resets the run.
        quality_threshold (float): an answer whose overall quality is below this is low
            quality (default 0.3).
        rich_threshold (float): an accepted answer at or above this needs no probe
            (default 0.75).
        probes_per_question (int): follow-up probes after each main question (default 1).
        max_clarifications (int): rephrasings of one question before moving on (default 2).
        max_abusive (int): abusive messages tolerated before the survey ends (default 3).
        max_turns (int): participant messages before the survey ends (default 200).
        max_minutes (float): minutes of active time before the survey ends (default 60);
            the platform counts a gap between two messages up to 5 minutes, so a break
            does not end the conversation.
        expected_minutes (float): how long the conversation usually takes, as the
            consent page and the FAQ say (default 20; at most ``max_minutes``).
        count_dont_know_as_low_quality (bool): a "don't know" extends the low-quality
            run (default True).
        off_topic_relevance (float): an answer of at least three words whose relevance to
            the question and topic is below this is off-topic: the bot steers back to the
            question instead of accepting it, once per question (default 0.1; 0 turns
            redirects off).
    """

    low_quality_k: int = Field(default=2, ge=1)
    quality_threshold: float = Field(default=0.3, ge=0.0, le=1.0)
    rich_threshold: float = Field(default=0.75, ge=0.0, le=1.0)
    probes_per_question: int = Field(default=1, ge=0)
    max_clarifications: int = Field(default=2, ge=0)
    max_abusive: int = Field(default=3, ge=1)
    max_turns: int = Field(default=200, ge=1)
    max_minutes: float = Field(default=60.0, gt=0)
    expected_minutes: float = Field(default=20.0, gt=0)
    count_dont_know_as_low_quality: bool = True
    off_topic_relevance: float = Field(default=0.1, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _expected_within_limit(self) -> Policy:
        if self.expected_minutes > self.max_minutes:
            raise ValueError(f"expected_minutes ({self.expected_minutes:g}) is more than "
                             f"max_minutes ({self.max_minutes:g})")
        return self


class NLUConfig(_Model):
    """Parameters of the language understanding (:mod:`communitybots.nlu`).

    Attributes:
        intent_threshold (float): below this classifier confidence a message counts as
            an answer (default 0.45).
        relevance ("auto" | "tfidf" | "embeddings"): relevance backend; "auto" uses
            all-MiniLM-L6-v2 sentence embeddings when the ``embeddings`` extra (and
            torch/transformers) is importable, else TF-IDF cosine (default "auto").
        max_analyzed_chars (int): only this many leading characters are analysed; the
            message itself is always kept whole (default 4000).
        llm_url (str | None): an OpenAI-compatible endpoint that may phrase probes; off
            by default.
        llm_model (str): model name sent to that endpoint.
    """

    intent_threshold: float = Field(default=0.45, ge=0.0, le=1.0)
    relevance: Literal["auto", "tfidf", "embeddings"] = "auto"
    max_analyzed_chars: int = Field(default=4000, ge=100)
    llm_url: str | None = None
    llm_model: str = "default"


class Survey(_Model):
    """A survey: a team of agents and their topics, the CTM policy and the NLU settings.

    Attributes:
        id (str): survey id.
        title (str): shown to participants.
        version (str): a label of this version of the file, e.g. "pilot" or "v2" ("" =
            none: the dashboard shows the start of the content hash instead). The
            platform stores it, with a hash of the whole specification, with every
            participant and message, so editing the file never pools two versions.
        description (str): one paragraph for the consent page (what the study is).
        consent (str): the consent statement the participant agrees to, shown above
            the consent box ("" = the platform's short default).
        welcome (str): said once before the first agent introduces itself ("" = none).
        farewell (str): said when the survey ends.
        agents (list[Agent]): the team, in the order they speak.
        pre_survey (list[QuestionItem]): questions before the chat (demographics).
        post_survey (list[QuestionItem]): questionnaire after the chat.
        tutorial (Tutorial | None): a page before the chat explaining it, per
            condition (None = straight to the chat).
        panel (Panel | None): recruitment-panel links and the completion URL.
        retention_days (int | None): days after a participant's last activity when
            their raw text (messages, free-text answers) is purged (None = kept).
        faq (list[FAQItem]): answers to questions about the bot or the survey; empty
            means the built-in answers of :mod:`communitybots.nlu`.
        policy (Policy): CTM parameters.
        nlu (NLUConfig): language-understanding parameters.
    """

    id: str = Field(pattern=_ID)
    title: str = Field(min_length=1)
    version: str = Field(default="", max_length=100)
    description: str = ""
    consent: str = ""
    welcome: str = ""
    farewell: str = "Thank you for taking part. Your answers have been saved."
    agents: list[Agent] = Field(min_length=1)
    pre_survey: list[QuestionItem] = Field(default_factory=list)
    post_survey: list[QuestionItem] = Field(default_factory=list)
    tutorial: Tutorial | None = None
    panel: Panel | None = None
    retention_days: int | None = Field(default=None, ge=1)
    faq: list[FAQItem] = Field(default_factory=list)
    policy: Policy = Field(default_factory=Policy)
    nlu: NLUConfig = Field(default_factory=NLUConfig)

    @model_validator(mode="after")
    def _unique_ids(self) -> Survey:
        seen_agents: dict[str, int] = {}
        seen_topics: dict[str, str] = {}
        for i, agent in enumerate(self.agents):
            if agent.id in seen_agents:
                raise _PathValueError(f"agents[{i}].id", f"duplicate agent id {agent.id!r}")
            seen_agents[agent.id] = i
            for j, topic in enumerate(agent.topics):
                if topic.id in seen_topics:
                    raise _PathValueError(
                        f"agents[{i}].topics[{j}].id",
                        f"duplicate topic id {topic.id!r} (also in {seen_topics[topic.id]})",
                    )
                seen_topics[topic.id] = f"agents[{i}]"
        items = [("pre_survey", i, it) for i, it in enumerate(self.pre_survey)] + \
            [("post_survey", i, it) for i, it in enumerate(self.post_survey)]
        seen_items: set[str] = set()
        for section, i, item in items:
            if item.id in seen_items:
                raise _PathValueError(f"{section}[{i}].id", f"duplicate item id {item.id!r} "
                                      "(ids are unique across pre_survey and post_survey)")
            seen_items.add(item.id)
        return self

    def topics(self) -> list[tuple[Agent, Topic]]:
        """All (agent, topic) pairs in conversation order."""
        return [(a, t) for a in self.agents for t in a.topics]

    def agent(self, agent_id: str) -> Agent:
        """The agent with this id (KeyError if none)."""
        for a in self.agents:
            if a.id == agent_id:
                return a
        raise KeyError(agent_id)

    def domain_of(self, topic_id: str) -> str:
        """The domain a topic belongs to: its own ``domain`` or its owner agent's."""
        agent, topic = self.topic(topic_id)
        return topic.domain or agent.domain

    def domains(self) -> list[str]:
        """Distinct domains in conversation order."""
        out: list[str] = []
        for a, t in self.topics():
            d = t.domain or a.domain
            if d not in out:
                out.append(d)
        return out

    def topic(self, topic_id: str) -> tuple[Agent, Topic]:
        """The (owner agent, topic) with this topic id (KeyError if none)."""
        for a, t in self.topics():
            if t.id == topic_id:
                return a, t
        raise KeyError(topic_id)


class _PathValueError(ValueError):
    """Raised inside validators to report an absolute YAML path."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_survey(data: object) -> Survey:
    """Validate already-parsed YAML/JSON data into a :class:`Survey` (raises SpecError)."""
    if not isinstance(data, dict):
        raise SpecError("", f"a survey must be a mapping, got {type(data).__name__}")
    try:
        return Survey.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        ctx_err = (first.get("ctx") or {}).get("error")
        if isinstance(ctx_err, _PathValueError):
            raise SpecError(ctx_err.path, ctx_err.reason) from None
        loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown field"
        raise SpecError(_format_loc(loc), msg.splitlines()[0]) from None


def load_survey(path: str | Path) -> Survey:
    """Read and validate a survey YAML file.

    Raises:
        SpecError: one line, ``"<yaml.path>: <reason>"``, for unreadable files, YAML
            syntax errors (path ``line N``) and invalid fields.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(str(p), f"cannot read file ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise SpecError(str(p), "file is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else str(p)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(where, f"YAML syntax error: {problem}") from None
    return parse_survey(data)


def single_agent(survey: Survey, name: str = "Survey Bot", colour: str = "#555555",
                 avatar: str = "bot") -> Survey:
    """The single-agent rendering of a survey: one persona asks the same topics.

    The study's baseline condition (CommunityBots §5): identical topics, questions, probes
    and policy, but one agent with one introduction, no hand-overs and no team welcome.
    Topic ids are kept so that answers of both conditions compare topic by topic, and each
    topic keeps its original domain so that "can we talk about work?" still works.
    """
    topics = [t.model_copy(update={"domain": t.domain or a.domain}) for a, t in survey.topics()]
    domains = survey.domains()
    listed = ", ".join(domains[:-1]) + (f" and {domains[-1]}" if len(domains) > 1 else domains[0])
    agent = Agent(
        id="single",
        name=name,
        domain="all",
        colour=colour,
        avatar=avatar,
        introduction=(
            f"Hi, I'm {name}. I'll ask you about {len(topics)} topics: {listed}. "
            "You can say 'skip' to move on to the next topic at any time."
        ),
        handover="",
        topics=topics,
    )
    # the welcome line may speak of the team ("three of us"); the one persona introduces itself
    return survey.model_copy(update={"id": f"{survey.id}-single", "agents": [agent], "welcome": ""})
