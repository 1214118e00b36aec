"""The Conversation and Topic Management (CTM) engine.

CommunityBots (Jiang et al., CSCW 2023, §3.2) coordinates a team of topic-expert chatbots
with a CTM component that decides, after every participant message, whether to accept the
answer, probe for more, move to the next topic (on request, after a run of low-quality
answers, or when the topic's dialog ends), and hand over to the chatbot that owns the
next topic, which then introduces itself.

``CTM.step(state, message, now)`` is a pure function: it reads the state and returns a
new state, the bot's replies and the events that explain every decision (a :class:`Step`,
which also carries the message's intent and quality as a typed ``analysis``), without I/O,
clock or randomness (``now`` is passed in, seconds since the conversation started).
The input state is never mutated; states round-trip through JSON (``State.to_json``).

Reply kinds: ``intro`` (an agent introduces itself, or the survey welcome),
``opening`` (a topic starts), ``question`` (a main question, or the current question
asked again), ``probe`` (a follow-up), ``ack`` (acknowledgement or small talk),
``clarify`` (a question rephrased or repeated, or "I didn't catch that"),
``answer_to_question`` (an answer to a question about the bot or survey), ``warning``
(after an abusive message), ``handover`` (the outgoing agent's hand-over line),
``closing`` (a topic's closing line), ``end`` (the farewell; also the reply to messages
after the end).

Event kinds, each with a one-line ``reason``: ``survey_start``, ``message_analyzed``
(always first for a participant message: intent, confidence, quality parts, the text
verbatim), ``answer_accepted``, ``dont_know``, ``probe``, ``next_question``,
``topic_finished``, ``topic_skipped``, ``topic_switched_low_quality``, ``domain_jump``,
``jump_declined``, ``topic_started``, ``handover``, ``clarification``, ``bot_question``,
``chit_chat``, ``gibberish``, ``abusive``, ``budget_reached``, ``survey_end``,
``message_after_end``, ``off_topic`` (an answer unrelated to the question: the bot steers
back to it, once per question), ``sensitive_disclosure`` (a death, illness, job loss,
mental-health crisis or violence: acknowledged with care, never probed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields

from communitybots.nlu import NLU, Analysis, Intent, normalize, words
from communitybots.spec import Agent, Survey, Topic

__all__ = ["CTM", "Event", "Reply", "State", "Step", "REPLY_KINDS", "EVENT_KINDS"]

REPLY_KINDS = frozenset({"intro", "opening", "question", "probe", "ack", "clarify",
                         "answer_to_question", "warning", "handover", "closing", "end"})
EVENT_KINDS = frozenset({
    "survey_start", "message_analyzed", "answer_accepted", "dont_know", "probe",
    "next_question", "topic_finished", "topic_skipped", "topic_switched_low_quality",
    "domain_jump", "jump_declined", "topic_started", "handover", "clarification",
    "bot_question", "chit_chat", "gibberish", "abusive", "budget_reached", "survey_end",
    "message_after_end", "off_topic", "sensitive_disclosure", "topics_left_out",
    "skip_declined",
})
#: what the bot says to a sensitive disclosure, by category of ``nlu.SENSITIVE``
CARE: dict[str, str] = {
    "bereavement": "I'm so sorry for your loss. Thank you for trusting me with something "
                   "so painful.",
    "illness": "I'm sorry to hear that; it sounds like a really hard time. Thank you for "
               "sharing it with me.",
    "job_loss": "I'm sorry to hear about that; losing work is hard, and thank you for "
                "telling me.",
    "mental_health": "Thank you for telling me; that sounds really difficult. If you are "
                     "struggling, please reach out to someone you trust or a local helpline.",
    "violence": "I'm very sorry that happened to you. Thank you for telling me; if you are "
                "not safe, please contact local emergency services or a support line.",
}
_CARE_AFTER = "You don't need to say more than you want to; let's go on when you're ready."

PENDING, ACTIVE, DONE, SKIPPED, SWITCHED = "pending", "active", "done", "skipped", "switched"
_CLOSED = (DONE, SKIPPED, SWITCHED)

_ACKS_GOOD = ("Thank you, that's really helpful.", "Thanks for sharing that.",
              "I see, thank you.", "That's interesting, thanks.")
_ACKS_LOW = ("Okay.", "I see.", "Got it.", "Thanks.")
_SMALL_TALK = (
    (("how are you", "how's it going", "how is it going", "how are u", "hope you're well",
      "how's your day", "what's up", "whats up", "what's new"),
     "I'm doing well, thanks for asking!"),
    (("thank", "thanks", "thx", "cheers", "ty"), "You're welcome!"),
    (("hello", "hi", "hey", "good morning", "good afternoon", "good evening", "howdy", "hiya",
      "heya", "yo"), "Hello! Nice to meet you."),
    (("bye", "have a nice", "have a good"), "Thanks! We're not quite done yet, though."),
)


@dataclass
class Reply:
    """One bot message: which agent speaks, about which topic, and what kind it is."""

    agent_id: str
    agent_name: str
    topic_id: str | None
    text: str
    kind: str


@dataclass
class Event:
    """One logged decision of the engine with its reason (see the module docstring)."""

    kind: str
    reason: str
    agent_id: str | None
    topic_id: str | None
    data: dict = field(default_factory=dict)


@dataclass
class State:
    """Everything the engine needs between messages; JSON-serialisable.

    Attributes:
        survey_id: the survey this state belongs to.
        agent_id / topic_id: the active agent and topic (None once finished).
        question_index: index of the current main question in the topic.
        stage: "question" (awaiting an answer to a main question) or "probe".
        pending_text: the question or probe the participant is answering.
        probes_asked: probes asked after the current main question.
        clarifications: rephrasings of the current question so far.
        low_quality_run: consecutive low-quality answers in the current topic.
        abusive_count: abusive messages so far.
        topic_status: topic id -> pending | active | done | skipped | switched.
        topic_progress: topic id -> next question index (to resume an interrupted topic).
        probe_cursor: topic id -> index of the next probe to use.
        turns: participant messages so far.
        started_at / last_at: seconds (caller's clock) at start and at the last message.
        finished: the survey has ended; end_reason says why
            ("complete" | "stopped" | "abusive" | "turn_budget" | "time_budget").
    """

    survey_id: str
    agent_id: str | None
    topic_id: str | None
    question_index: int = 0
    stage: str = "question"
    pending_text: str = ""
    probes_asked: int = 0
    clarifications: int = 0
    redirects: int = 0
    low_quality_run: int = 0
    abusive_count: int = 0
    topic_status: dict[str, str] = field(default_factory=dict)
    topic_progress: dict[str, int] = field(default_factory=dict)
    probe_cursor: dict[str, int] = field(default_factory=dict)
    turns: int = 0
    started_at: float = 0.0
    last_at: float = 0.0
    finished: bool = False
    end_reason: str | None = None
    version: int = 1

    @property
    def progress(self) -> tuple[int, int]:
        """(topics done, skipped or switched; topics in total)."""
        done = sum(1 for s in self.topic_status.values() if s in _CLOSED)
        return done, len(self.topic_status)

    def to_json(self) -> dict:
        """A JSON-serialisable dict (round-trips through :meth:`from_json`), sharing
        nothing mutable with the state: one pass over the fields, each mapping copied
        (their values are strings and numbers, so a copy of the mapping is a deep one)."""
        return {name: dict(value) if isinstance(value, dict) else value
                for name, value in self.__dict__.items()}

    @classmethod
    def from_json(cls, data: dict) -> State:
        """Rebuild a state from :meth:`to_json` output (ValueError on unknown/missing keys);
        the state shares nothing mutable with ``data``."""
        unknown = set(data) - _STATE_FIELDS
        if unknown:
            raise ValueError(f"unknown state fields: {sorted(unknown)}")
        try:
            return cls(**{name: dict(value) if isinstance(value, dict) else value
                          for name, value in data.items()})
        except TypeError as err:
            raise ValueError(f"invalid state: {err}") from None

    def copy(self) -> State:
        """An independent copy (what ``step`` works on, so its input stays unchanged)."""
        return State(**self.to_json())


_STATE_FIELDS = frozenset(f.name for f in fields(State))


@dataclass(frozen=True)
class Step:
    """What :meth:`CTM.step` returns: the new state, the replies and the events, plus the
    message's :class:`~communitybots.nlu.Analysis` (intent and quality parts) as a typed
    value, so that callers read it here rather than out of the ``message_analyzed`` event.

    It unpacks and indexes as the triple ``(state, replies, events)``: the analysis is
    read by name (``step.analysis``).
    """

    state: State
    replies: list[Reply]
    events: list[Event]
    analysis: Analysis

    def __iter__(self) -> Iterator[State | list[Reply] | list[Event]]:
        return iter((self.state, self.replies, self.events))

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> State | list[Reply] | list[Event]:
        return (self.state, self.replies, self.events)[index]


class _Turn:
    """Mutable scratchpad of one step: the new state and what it says and logs."""

    def __init__(self, ctm: CTM, state: State, message: str = ""):
        self.ctm = ctm
        self.s = state
        self.message = message
        self.replies: list[Reply] = []
        self.events: list[Event] = []

    # -- helpers -----------------------------------------------------------------------
    @property
    def agent(self) -> Agent:
        return self.ctm.survey.agent(self.s.agent_id)

    @property
    def topic(self) -> Topic | None:
        return None if self.s.topic_id is None else self.ctm.survey.topic(self.s.topic_id)[1]

    def say(self, text: str, kind: str, agent: Agent | None = None) -> None:
        agent = agent or self.agent
        self.replies.append(Reply(agent.id, agent.name, self.s.topic_id, text, kind))

    def log(self, kind: str, reason: str, **data: object) -> None:
        self.events.append(Event(kind, reason, self.s.agent_id, self.s.topic_id, dict(data)))

    # -- asking ------------------------------------------------------------------------
    def ask_current(self, prefix: str = "") -> None:
        """Ask (or re-ask) the pending question or probe."""
        kind = "probe" if self.s.stage == "probe" else "question"
        self.say(f"{prefix}{self.s.pending_text}", kind)

    def ask_question(self, index: int) -> None:
        topic = self.topic
        self.s.question_index = index
        self.s.stage = "question"
        self.s.probes_asked = 0
        self.s.clarifications = 0
        self.s.redirects = 0
        self.s.topic_progress[topic.id] = index
        self.s.pending_text = topic.questions[index]
        self.say(self.s.pending_text, "question")

    def ask_probe(self, reason: str, quality: float) -> None:
        topic = self.topic
        cursor = self.s.probe_cursor.get(topic.id, 0)
        probe = topic.probes[cursor % len(topic.probes)]
        self.s.probe_cursor[topic.id] = cursor + 1
        question = topic.questions[self.s.question_index]
        self.s.stage = "probe"
        self.s.probes_asked += 1
        self.s.clarifications = 0
        self.s.redirects = 0
        self.s.pending_text = probe
        self.log("probe", reason, probe_index=cursor % len(topic.probes), question=question,
                 template=probe, quality=round(quality, 4))
        self.say(probe, "probe")

    # -- moving between topics -----------------------------------------------------------
    def enter_topic(self, topic_id: str, reason: str) -> None:
        """Make a topic active (handing over if its owner differs) and ask its question."""
        survey = self.ctm.survey
        owner, topic = survey.topic(topic_id)
        if self.s.agent_id is not None and owner.id != self.s.agent_id:
            outgoing = self.agent
            self.log("handover", f"topic {topic.title!r} belongs to {owner.name} "
                     f"({owner.domain}); {outgoing.name} hands over",
                     from_agent=outgoing.id, to_agent=owner.id, to_topic=topic.id)
            if outgoing.handover:
                self.say(outgoing.handover.replace("{next}", owner.name), "handover")
            met = any(t.id in self.s.topic_progress for t in owner.topics)  # asked before
            self.s.agent_id = owner.id
            self.s.topic_id = topic.id
            # an agent introduces itself once; back again, it only says so
            self.say(f"Hi again, it's {owner.name}." if met else owner.introduction, "intro")
        self.s.agent_id = owner.id
        self.s.topic_id = topic.id
        self.s.topic_status[topic.id] = ACTIVE
        self.s.low_quality_run = 0
        resume = self.s.topic_progress.get(topic.id, 0)
        self.log("topic_started", reason, question_index=resume,
                 progress=list(self.s.progress))
        if resume == 0:
            self.say(topic.opening, "opening")
        else:
            self.say(f"Let's come back to {topic.title.lower()}.", "opening")
        self.ask_question(resume)

    def next_pending_after(self, topic_id: str | None) -> str | None:
        """The first pending topic after ``topic_id`` in survey order, wrapping around."""
        order = [t.id for _, t in self.ctm.survey.topics()]
        start = order.index(topic_id) + 1 if topic_id in order else 0
        for tid in order[start:] + order[:start]:
            if self.s.topic_status.get(tid) == PENDING:
                return tid
        return None

    def leave_topic(self, status: str) -> None:
        """Close the current topic with ``status`` and go to the next pending topic."""
        current = self.s.topic_id
        self.s.topic_status[current] = status
        nxt = self.next_pending_after(current)
        if nxt is None:
            self.end("complete", "all topics have been covered")
        else:
            self.enter_topic(nxt, f"next pending topic after {current!r} in survey order")

    def advance_question(self, reason: str) -> None:
        """Go to the next main question, or finish the topic after its last one."""
        topic = self.topic
        nxt = self.s.question_index + 1
        if nxt < len(topic.questions):
            self.log("next_question", reason, question_index=nxt)
            self.ask_question(nxt)
            return
        self.s.topic_progress[topic.id] = len(topic.questions)
        self.log("topic_finished", f"{reason}; all {len(topic.questions)} questions of "
                 f"{topic.title!r} done", questions=len(topic.questions))
        self.say(topic.closing, "closing")
        self.leave_topic(DONE)

    def end(self, end_reason: str, reason: str) -> None:
        self.s.finished = True
        self.s.end_reason = end_reason
        if self.s.topic_id is not None and self.s.topic_status.get(self.s.topic_id) == ACTIVE:
            self.s.topic_status[self.s.topic_id] = PENDING
        self.log("survey_end", reason, end_reason=end_reason, progress=list(self.s.progress),
                 turns=self.s.turns)
        self.say(self.ctm.survey.farewell, "end")
        self.s.topic_id = None
        self.s.pending_text = ""


Handler = Callable[[_Turn, Analysis], None]


class CTM:
    """The CTM engine for one survey.

    Args:
        survey: the validated survey.
        nlu: a prepared :class:`~communitybots.nlu.NLU` (built from the survey if None).
        relevance: relevance backend for a new NLU ("auto" | "tfidf" | "embeddings").

    ``start`` and ``step`` are pure: same inputs, same outputs, no I/O, input unchanged.
    """

    def __init__(self, survey: Survey, nlu: NLU | None = None, relevance: str | None = None):
        self.survey = survey
        self.policy = survey.policy
        self.nlu = nlu or NLU(survey, relevance=relevance)
        self._handlers: dict[Intent, Handler] = {
            Intent.ANSWER: self._on_answer,
            Intent.DONT_KNOW: self._on_dont_know,
            Intent.SKIP: self._on_skip,
            Intent.JUMP: self._on_jump,
            Intent.CLARIFY: self._on_clarify,
            Intent.BOT_QUESTION: self._on_bot_question,
            Intent.CHIT_CHAT: self._on_chit_chat,
            Intent.GIBBERISH: self._on_gibberish,
            Intent.STOP: self._on_stop,
            Intent.ABUSIVE: self._on_abusive,
        }

    # -- public API ----------------------------------------------------------------------
    def start(self, now: float = 0.0) -> tuple[State, list[Reply], list[Event]]:
        """A new conversation: welcome, the first agent's introduction, the first question."""
        first_agent, first_topic = self.survey.topics()[0]
        state = State(survey_id=self.survey.id, agent_id=first_agent.id, topic_id=None,
                      topic_status={t.id: PENDING for _, t in self.survey.topics()},
                      started_at=now, last_at=now)
        turn = _Turn(self, state)
        turn.log("survey_start", "conversation started", agents=len(self.survey.agents),
                 topics=len(state.topic_status))
        if self.survey.welcome:
            turn.say(self.survey.welcome, "intro", first_agent)
        turn.say(first_agent.introduction, "intro", first_agent)
        turn.enter_topic(first_topic.id, "first topic of the survey")
        return turn.s, turn.replies, turn.events

    def step(self, state: State, message: str, now: float) -> Step:
        """Process one participant message; pure (see the module docstring).

        Returns the :class:`Step`: ``state, replies, events = ctm.step(...)`` as before,
        and ``.analysis``, the message's intent and quality.

        Args:
            state: the state returned by the previous ``start``/``step`` (not mutated).
            message: the participant's text, kept verbatim in the ``message_analyzed`` event.
            now: seconds on the caller's clock (the same clock as ``start``'s ``now``).
        """
        if not isinstance(message, str):
            raise TypeError(f"message must be str, got {type(message).__name__}")
        turn = _Turn(self, state.copy(), message)
        s = turn.s
        topic = turn.topic
        analysis = self.nlu.analyze(message, s.pending_text, topic)
        s.turns += 1
        s.last_at = now
        turn.log("message_analyzed", f"intent {analysis.intent.intent} "
                 f"({analysis.intent.rule}), quality {analysis.quality.overall:.2f}",
                 **analysis.to_event_data(message))
        if s.finished:
            turn.log("message_after_end", f"the survey already ended ({s.end_reason})")
            turn.say("This conversation has ended. Thank you for taking part!", "end")
            return Step(s, turn.replies, turn.events, analysis)
        budget = self._budget_reason(s, now)
        if budget is not None:
            self._on_budget(turn, analysis, *budget)
        else:
            self._handlers[analysis.intent.intent](turn, analysis)
        return Step(s, turn.replies, turn.events, analysis)

    # -- budget --------------------------------------------------------------------------
    def _budget_reason(self, s: State, now: float) -> tuple[str, str] | None:
        p = self.policy
        if s.turns >= p.max_turns:
            return "turn_budget", f"turn budget reached ({s.turns} of {p.max_turns} messages)"
        minutes = (now - s.started_at) / 60.0
        if minutes >= p.max_minutes:
            return "time_budget", (f"time budget reached ({minutes:.1f} of "
                                   f"{p.max_minutes:g} minutes)")
        return None

    def _on_budget(self, turn: _Turn, a: Analysis, end_reason: str, reason: str) -> None:
        if a.intent.intent in (Intent.ANSWER, Intent.DONT_KNOW):
            turn.log("answer_accepted", "last answer accepted before the budget ran out",
                     **self._answer_data(turn, a, low=a.quality.overall < self.policy.quality_threshold))
        turn.log("budget_reached", reason, turns=turn.s.turns, limit_turns=self.policy.max_turns,
                 limit_minutes=self.policy.max_minutes)
        turn.say("We've reached the end of our time together.", "closing")
        turn.end(end_reason, reason)

    # -- intent handlers -------------------------------------------------------------------
    def _answer_data(self, turn: _Turn, a: Analysis, low: bool) -> dict:
        return {"quality": round(a.quality.overall, 4), "low_quality": low,
                "low_quality_run": turn.s.low_quality_run, "stage": turn.s.stage,
                "question_index": turn.s.question_index, "question": turn.s.pending_text}

    def _switch_low_quality(self, turn: _Turn) -> None:
        run, k = turn.s.low_quality_run, self.policy.low_quality_k
        turn.log("topic_switched_low_quality",
                 f"{run} low-quality answers in a row (k={k}); moving to another topic",
                 low_quality_run=run, k=k)
        turn.say("Let's try a different topic.", "ack")
        turn.leave_topic(SWITCHED)

    def _on_answer(self, turn: _Turn, a: Analysis) -> None:
        p, s = self.policy, turn.s
        q = a.quality.overall
        if a.sensitive is not None:
            self._on_sensitive(turn, a)
            return
        relevance = a.quality.relevance
        if (relevance < p.off_topic_relevance and s.redirects < 1
                and len(words(turn.message)) >= 3):
            s.redirects += 1
            turn.log("off_topic", f"relevance {relevance:.2f} < {p.off_topic_relevance} "
                     "(off-topic); steering back to the question", relevance=round(relevance, 4),
                     question=s.pending_text)
            title = turn.topic.title.lower() if turn.topic is not None else "this"
            turn.say(f"That sounds like a different subject. I'd like to stay with {title} "
                     "for now.", "ack")
            turn.ask_current("Back to my question: ")
            return
        low = q < p.quality_threshold
        s.low_quality_run = s.low_quality_run + 1 if low else 0
        turn.log("answer_accepted",
                 (f"low-quality answer ({q:.2f} < {p.quality_threshold}); run "
                  f"{s.low_quality_run} of {p.low_quality_k}") if low else
                 f"good answer ({q:.2f} >= {p.quality_threshold}); low-quality run reset",
                 **self._answer_data(turn, a, low))
        if low and s.low_quality_run >= p.low_quality_k:
            self._switch_low_quality(turn)
            return
        acks = _ACKS_LOW if low else _ACKS_GOOD
        turn.say(acks[s.turns % len(acks)], "ack")
        # probes_asked counts the follow-ups since the main question, so with
        # probes_per_question > 1 a thin answer to a probe gets another probe
        can_probe = s.probes_asked < p.probes_per_question
        if can_probe and q < p.rich_threshold:
            turn.ask_probe(
                f"answer quality {q:.2f} is low; asking for more detail" if low else
                f"answer quality {q:.2f} < rich threshold {p.rich_threshold}; following up", q)
            return
        if s.stage == "probe":
            why = "probe answered"
        elif not can_probe:
            why = "answer accepted; no probes left for this question"
        else:
            why = f"rich answer ({q:.2f} >= {p.rich_threshold}); no probe needed"
        turn.advance_question(why)

    def _on_sensitive(self, turn: _Turn, a: Analysis) -> None:
        """A death, illness, job loss, ...: accepted as an answer (whatever its quality
        score), acknowledged with care, and never probed for more detail."""
        s = turn.s
        s.low_quality_run = 0
        turn.log("answer_accepted", f"answer with a sensitive disclosure ({a.sensitive})",
                 **self._answer_data(turn, a, low=False))
        turn.log("sensitive_disclosure", f"{a.sensitive} disclosed; acknowledged with care, "
                 "not probed", category=a.sensitive)
        turn.say(CARE[a.sensitive], "ack")
        turn.say(_CARE_AFTER, "ack")
        turn.advance_question("sensitive disclosure; moving on without a probe")

    def _on_dont_know(self, turn: _Turn, a: Analysis) -> None:
        p, s = self.policy, turn.s
        if p.count_dont_know_as_low_quality:
            s.low_quality_run += 1
        turn.log("dont_know", f"participant doesn't know; low-quality run {s.low_quality_run} "
                 f"of {p.low_quality_k}", low_quality_run=s.low_quality_run,
                 question=s.pending_text)
        if p.count_dont_know_as_low_quality and s.low_quality_run >= p.low_quality_k:
            self._switch_low_quality(turn)
            return
        turn.say("That's okay.", "ack")
        turn.advance_question("participant didn't know; moving to the next question")

    def _on_skip(self, turn: _Turn, a: Analysis) -> None:
        if a.intent.domain is not None:
            self._skip_named(turn, a)
            return
        topic = turn.topic
        turn.log("topic_skipped", f"participant asked to skip {topic.title!r} "
                 f"({a.intent.rule})", rule=a.intent.rule)
        turn.say("Sure, let's move on.", "ack")
        turn.leave_topic(SKIPPED)

    def _skip_named(self, turn: _Turn, a: Analysis) -> None:
        """ "Skip the health questions": leave out every open topic of that domain (or
        the one topic named). Topics not reached are closed as skipped
        (``topics_left_out``); the current one, if named, is skipped as usual."""
        s, domain = turn.s, a.intent.domain
        named = [a.intent.topic_id] if a.intent.topic_id else [
            t.id for ag, t in self.survey.topics() if (t.domain or ag.domain) == domain]
        what = self.survey.topic(named[0])[1].title.lower() if a.intent.topic_id else domain
        open_ = [tid for tid in named if s.topic_status.get(tid) not in _CLOSED]
        if not open_:
            turn.log("skip_declined", f"{what!r} is already covered", domain=domain,
                     topics=named)
            turn.say(f"We've already covered {what}, so let's continue here.", "ack")
            turn.ask_current()
            return
        ahead = [tid for tid in open_ if tid != s.topic_id]
        for tid in ahead:
            s.topic_status[tid] = SKIPPED
        if ahead:
            turn.log("topics_left_out", f"participant asked to leave out {what} "
                     f"({a.intent.rule}); {len(ahead)} topic(s) not reached are closed",
                     domain=domain, topics=ahead)
        if s.topic_id in open_:
            turn.log("topic_skipped", f"participant asked to skip {what} ({a.intent.rule})",
                     rule=a.intent.rule, domain=domain)
            turn.say(f"Sure, we'll leave out {what}.", "ack")
            turn.leave_topic(SKIPPED)
            return
        turn.say(f"Sure, we'll leave out {what}.", "ack")
        turn.ask_current("Back to my question: ")

    def _on_jump(self, turn: _Turn, a: Analysis) -> None:
        s, survey = turn.s, self.survey
        domains = survey.domains()
        if a.intent.domain is None:
            turn.log("jump_declined", "participant asked to change topic but named no known "
                     "domain", domains=domains)
            turn.say(f"I can talk about {', '.join(domains)}; say for example \"let's talk "
                     f"about {domains[-1]}\". Meanwhile:", "clarify")
            turn.ask_current()
            return
        target = self._jump_target(turn, a.intent.domain, a.intent.topic_id)
        if target is None:
            turn.log("jump_declined", f"all topics of {a.intent.domain!r} are already covered",
                     domain=a.intent.domain)
            turn.say(f"We've already covered {a.intent.domain}, so let's continue here.", "ack")
            turn.ask_current()
            return
        if target == s.topic_id:
            turn.log("jump_declined", f"already talking about {turn.topic.title!r}",
                     domain=a.intent.domain, topic=target)
            turn.say("That's what we're talking about right now!", "ack")
            turn.ask_current()
            return
        owner, t = survey.topic(target)
        current = s.topic_id
        s.topic_status[current] = PENDING  # resumed later from its current question
        turn.log("domain_jump", f"participant asked for {a.intent.domain}"
                 + (f" ({a.intent.topic_id})" if a.intent.topic_id else "")
                 + f"; jumping to {t.title!r}", domain=a.intent.domain,
                 requested_topic=a.intent.topic_id, from_topic=current, to_topic=target,
                 to_agent=owner.id)
        turn.say(f"Sure, let's talk about {t.title.lower()}.", "ack")
        turn.enter_topic(target, f"participant jumped here from {current!r}")

    def _jump_target(self, turn: _Turn, domain: str, topic_id: str | None) -> str | None:
        """The topic a jump goes to: the named topic if not closed, else the first pending
        (or the active) topic of the domain; None if the domain is covered."""
        s = turn.s
        if topic_id is not None and s.topic_status.get(topic_id) not in _CLOSED:
            return topic_id
        in_domain = [t.id for a, t in self.survey.topics() if (t.domain or a.domain) == domain]
        for tid in in_domain:
            if s.topic_status.get(tid) == ACTIVE:
                return tid
        for tid in in_domain:
            if s.topic_status.get(tid) == PENDING:
                return tid
        return None

    def _on_clarify(self, turn: _Turn, a: Analysis) -> None:
        p, s = self.policy, turn.s
        s.clarifications += 1
        if s.clarifications > p.max_clarifications:
            turn.log("clarification", f"still unclear after {p.max_clarifications} "
                     "rephrasings; moving on", clarifications=s.clarifications, action="move_on")
            turn.say("Sorry for the confusion, let's move on.", "ack")
            turn.advance_question("question remained unclear")
            return
        topic = turn.topic
        if s.clarifications == 1:
            examples = [k for k in topic.keywords if k.lower() not in s.pending_text.lower()][:3]
            hint = (f" For example, you could mention {', '.join(examples[:-1])} or "
                    f"{examples[-1]}." if len(examples) > 1 else "")
            text = (f"Let me put it another way. We're talking about {topic.title.lower()}: "
                    f"{s.pending_text}{hint}")
            action = "rephrase"
        else:
            text = f"Sorry, I'll repeat the question: {s.pending_text}"
            action = "repeat"
        turn.log("clarification", f"participant asked for clarification; {action} "
                 f"({s.clarifications} of {p.max_clarifications})",
                 clarifications=s.clarifications, action=action)
        turn.say(text, "clarify")

    def _on_bot_question(self, turn: _Turn, a: Analysis) -> None:
        item, sim = self.nlu.faq.match(turn.message[: self.nlu.config.max_analyzed_chars])
        done, total = turn.s.progress
        fill = {"agent": turn.agent.name, "survey": self.survey.title,
                "topics_left": str(total - done),
                "minutes": f"{self.policy.expected_minutes:g}",
                "limit": f"{self.policy.max_minutes:g}"}
        if item is None:
            text = (f"I'm {turn.agent.name}, a chatbot asking about {turn.agent.domain}. "
                    "I may not be able to answer that, but I'm happy to keep listening.")
        else:
            text = item.answer
            for k, v in fill.items():
                text = text.replace("{" + k + "}", v)
        turn.log("bot_question", "participant asked about the bot or survey; answered from "
                 + (f"FAQ {item.id!r}" if item else "the generic reply"),
                 faq_id=item.id if item else None, similarity=round(sim, 4))
        turn.say(text, "answer_to_question")
        turn.ask_current("Back to my question: ")

    def _on_chit_chat(self, turn: _Turn, a: Analysis) -> None:
        low = normalize(turn.message[: self.nlu.config.max_analyzed_chars])
        tokens = set(words(low))
        text = "😊"
        for cues, reply in _SMALL_TALK:
            if any(c in tokens or (" " in c and c in low) for c in cues):
                text = reply
                break
        turn.log("chit_chat", "small talk; answered briefly and repeated the question")
        turn.say(text, "ack")
        turn.ask_current()

    def _on_gibberish(self, turn: _Turn, a: Analysis) -> None:
        p, s = self.policy, turn.s
        s.low_quality_run += 1
        turn.log("gibberish", f"message not understood ({a.intent.rule}); low-quality run "
                 f"{s.low_quality_run} of {p.low_quality_k}", low_quality_run=s.low_quality_run)
        if s.low_quality_run >= p.low_quality_k:
            self._switch_low_quality(turn)
            return
        turn.say("Sorry, I didn't quite catch that.", "clarify")
        turn.ask_current()

    def _on_stop(self, turn: _Turn, a: Analysis) -> None:
        turn.say("Okay, we'll stop here.", "closing")
        turn.end("stopped", f"participant asked to stop ({a.intent.rule})")

    def _on_abusive(self, turn: _Turn, a: Analysis) -> None:
        p, s = self.policy, turn.s
        s.abusive_count += 1
        turn.log("abusive", f"abusive message {s.abusive_count} of {p.max_abusive} tolerated",
                 abusive_count=s.abusive_count)
        if s.abusive_count >= p.max_abusive:
            turn.say("I'm going to end our conversation here.", "warning")
            turn.end("abusive", f"{s.abusive_count} abusive messages")
            return
        turn.say("Let's keep this respectful, please.", "warning")
        turn.ask_current()

