"""The judge's instructions: versioned templates, all in this one file.

A template's version is part of every judge cache key, so editing the wording of a template
without raising ``TEMPLATE_VERSION`` would replay replies given to the old wording: bump it with
any change here. The instructions follow the reference evaluation's rules (scores 0, 0.5 or 1;
content counts, form does not; attribute reasoning sees the concept's name, its description, its
extra facts, the generation prompt and one image), written in our own words.
"""
from __future__ import annotations

TEMPLATE_VERSION = "v1"

# Appended to the user message when a first reply could not be read. The re-ask is a fresh
# conversation (the first reply is not sent back), so it repeats the whole question.
REASK_SUFFIX = ("\n\nYour reply must be exactly one line and nothing else: "
                "'Score: 0', 'Score: 0.5' or 'Score: 1'.")

QA_SYSTEM = """\
You grade answers to questions about a personal concept: a particular pet, object or person that \
the user calls by a name written in angle brackets, such as <bo>.

Compare the candidate answer with the reference answer and judge only whether its content agrees \
with the reference. Wording, length, grammar, politeness and style do not matter; the facts do.

- 1: the candidate states the same facts as the reference (extra detail that does not contradict \
it is fine).
- 0.5: partly right: some of the facts the reference gives are right and others are missing, \
vague or wrong.
- 0: wrong, contradicts the reference, answers something else, or gives no answer.

Reply with a single line of the form "Score: X", where X is 0, 0.5 or 1."""

QA_USER = """\
Question: {question}
Reference answer: {reference}
Candidate answer: {candidate}"""

ATTR_SYSTEM = """\
You check generated images of a personal concept: a particular pet, object or person that the \
user calls by a name written in angle brackets, such as <bo>. The generation prompt relies on \
facts about the concept that cannot be seen in its photos (its favourite toy, its bed, what it \
usually wears); the facts are listed for you.

Judge what the image shows, not how well it is drawn: is it the concept as described, and does \
it show what the prompt asks for once the prompt is read with the facts in mind?

- 1: the image shows the concept, and the attribute or scene the facts imply for this prompt.
- 0.5: only half of it: the concept without the implied attribute or scene, or the attribute or \
scene with a subject that does not match the description.
- 0: neither.

Reply with a single line of the form "Score: X", where X is 0, 0.5 or 1."""

ATTR_USER = """\
Concept name: {name}
What it looks like: {info}
Facts about it:
{facts}
Generation prompt: {prompt}
The generated image is attached."""


def qa_messages(question: str, reference: str, candidate: str) -> tuple[str, str]:
    """(system, user) texts for judging one open answer against its reference."""
    return QA_SYSTEM, QA_USER.format(question=question.strip(), reference=reference.strip(),
                                     candidate=candidate.strip() or "(empty)")


def attr_messages(name: str, info: str, facts: list[str], prompt: str) -> tuple[str, str]:
    """(system, user) texts for judging one generated image of an attribute-reasoning prompt."""
    listed = "\n".join(f"- {f.strip()}" for f in facts) or "- (none given)"
    return ATTR_SYSTEM, ATTR_USER.format(name=name, info=info.strip() or "(no description)",
                                         facts=listed, prompt=prompt.strip())
