"""Each prompt format against a transcription of its source, byte for byte.

The ``*_source`` functions below copy the sources' lines (variable names and all) and run them on
our inputs; only file loading and model calls are left out. Sources (the method card names them too):

- MMPB: AIDASLab/MMPB @ 591dab79c216951eaab324cb3536f880fe5ec91e,
  VLMEvalKit/vlmeval/dataset/image_mcq.py, ``MMPB.build_prompt`` (the ``chat_inner`` branch:
  InternVL, llava_v1.5, deepseek), MCQ ``final_query`` of the ``inconsistency`` category;
- RAP: Hoar012/RAP-MLLM @ 016f734d405507a1ab7d7662ab12b66bd98af2a6, eval/VQA.py, eval/TQA.py,
  eval/recognition.py, and retriever.py ``ClipRetriever.retrieve`` (its ``extra_info``);
- Yo'Chameleon: thaoshibe/YoChameleon @ d740de21d7c7d3c4af9256e9738414f8a76aa5d9,
  baselines/chameleon-qa.py (the running VQA-with-image-prompt block and the commented
  QA-with-image-prompt and VQA-with-text-prompt blocks).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from unifybench_iclvlm import formats
from unifybench_iclvlm.formats import Question, rendered

TOKEN = "<bo>"
DESCRIPTION = "<bo> is a corgi with a red collar."
REFS = [Path("/refs/0.png"), Path("/refs/1.png"), Path("/refs/2.png")]
TEST_IMAGE = Path("/test/bo/3.png")
OPTIONS = (("A", "Red"), ("B", "Blue"))
CHOICE = Question("choice", "What colour is <bo>'s collar?\nA. Red\nB. Blue\nAnswer with the option's letter.",
                  "What colour is <bo>'s collar?", OPTIONS, TEST_IMAGE)
TEXT_CHOICE = Question("choice", CHOICE.question, CHOICE.stem, OPTIONS, None)
REC = Question("rec", "Is <bo> in this image?", "Is <bo> in this image?", (), TEST_IMAGE)


def _as_source(request) -> list[dict]:
    """Our request in the shape a source's message list has: a turn of one text is that string,
    any other a list of its parts (images as path strings)."""
    out = []
    for m in request.messages:
        parts = [p if isinstance(p, str) else str(p) for p in m.parts]
        out.append({"role": m.role, "content": parts[0] if len(parts) == 1 and isinstance(m.parts[0], str) else parts})
    return out


def test_question_stem_drops_the_option_lines_the_harness_wrote():
    assert formats.question_stem(CHOICE.question, OPTIONS) == CHOICE.stem
    assert formats.question_stem("Which one? A. Red B. Blue", OPTIONS) == "Which one?"
    assert formats.question_stem("No options here", ()) == "No options here"


# ------------------------------------------------------------------------------------------------ MMPB
def mmpb_source(inj_img_path, preference, description, prompt_is_image, tgt_path, question, options_dict):
    """image_mcq.py, MMPB.build_prompt: final_query (l2 'inconsistency', MCQ) and the chat_inner branch."""
    final_query = ""
    options = options_dict
    options_prompt = 'Options:\n'
    for key, item in options.items():
        options_prompt += f'{key}. {item}\n'
    final_query += f'\n{question}\n'
    if len(options):
        final_query += options_prompt
    prompt = preference + " " + description
    msgs = []
    if prompt_is_image:
        msgs.append({'role': 'user', 'content': [img_path for img_path in inj_img_path] + [f"These images presents <sks>. {preference}"]})
        msgs.append({'role': 'assistant', 'content': 'I got it.'})
    else:
        msgs.append({'role': 'user', 'content': prompt})
        msgs.append({'role': 'assistant', 'content': 'I got it.'})
    msgs.append({'role': 'user', 'content': [tgt_path[0], final_query]})
    return msgs


def test_mmpb_image_injection_matches_the_source():
    ours = _as_source(formats.build("mmpb", TOKEN, DESCRIPTION, REFS, CHOICE))
    source = mmpb_source([str(p) for p in REFS], DESCRIPTION, "", True, [str(TEST_IMAGE)], CHOICE.stem, dict(OPTIONS))
    source[0]["content"][-1] = source[0]["content"][-1].replace("<sks>", TOKEN)  # the concept's name here
    assert ours == source


def test_mmpb_text_injection_and_a_question_without_options_match_the_source():
    ours = _as_source(formats.build("mmpb", TOKEN, DESCRIPTION, [], REC))
    assert ours == mmpb_source([], "", DESCRIPTION, False, [str(TEST_IMAGE)], REC.stem, {})


# ------------------------------------------------------------------------------------------------- RAP
def rap_extra_info(rag_images, name, info):
    """retriever.py, ClipRetriever.retrieve: the prompt text of the retrieved entries."""
    extra_info = ""
    for i, ret_path in enumerate(rag_images):
        extra_info += f"{i+1}.<image>\n Name: <{name}>, Info: {info}\n"
    return extra_info


def rap_vqa_source(question, option_dict, extra_info):
    """eval/VQA.py: q and Query (retrieval on)."""
    q = "Question: " + question + "\nOptions:\n"
    for option, content in option_dict.items():
        q += f"{option}. {content}\n"
    q += 'Please give a single character from the options above. \n'
    q = q.replace("<image>\n", "")
    Query = f"<image>\n[{extra_info}]{q}"
    return Query


def rap_tqa_source(question, option_dict, extra_info):
    """eval/TQA.py: q and Query (retrieval on)."""
    q = "Question: " + question + "\nOptions:\n"
    for option, content in option_dict.items():
        q += f"{option}. {content}\n"
    q += 'Please give a single character from the options above. \n'
    Query = f"{extra_info}{q}"
    return Query


def rap_recognition_source(question, extra_info):
    """eval/recognition.py: Query (retrieval on)."""
    question = question.replace("<image>\n", "")
    Query = f"<image>\n[{extra_info}]{question}"
    return Query


def _images(request) -> list[Path]:
    return list(request.images)


def test_rap_visual_choice_matches_the_source():
    request = formats.build("rap", TOKEN, DESCRIPTION, REFS, CHOICE)
    expected = rap_vqa_source(CHOICE.stem, dict(OPTIONS), rap_extra_info(REFS, "bo", DESCRIPTION))
    assert rendered(request) == [{"role": "user", "content": expected}]
    assert _images(request) == [TEST_IMAGE, *REFS]  # VQA.py: images = [image] + the retrieved ones


def test_rap_text_only_choice_matches_the_source():
    request = formats.build("rap", TOKEN, DESCRIPTION, REFS[:1], TEXT_CHOICE)
    expected = rap_tqa_source(CHOICE.stem, dict(OPTIONS), rap_extra_info(REFS[:1], "bo", DESCRIPTION))
    assert rendered(request) == [{"role": "user", "content": expected}]
    assert _images(request) == REFS[:1]


def test_rap_recognition_matches_the_source():
    request = formats.build("rap", TOKEN, DESCRIPTION, REFS[:2], REC)
    expected = rap_recognition_source("<image>\n" + REC.stem, rap_extra_info(REFS[:2], "bo", DESCRIPTION))
    assert rendered(request) == [{"role": "user", "content": expected}]
    assert _images(request) == [TEST_IMAGE, *REFS[:2]]


# ---------------------------------------------------------------------------------------- Yo'Chameleon
def yochameleon_vqa_image_prompt_source(question_text, options):
    """baselines/chameleon-qa.py, the running block (VQA with image prompt)."""
    prompt = question_text.replace('<sks>', 'this subject')
    option_A = options['A']
    option_B = options['B']
    question = prompt + f'{option_A} or {option_B}?'
    question = 'You are seeing a photo of an subject <image>' + question +'<image>'
    return question


def yochameleon_qa_image_prompt_source(question_text, options):
    """baselines/chameleon-qa.py, 'QA with Image Prompt' (commented out there)."""
    prompt = question_text.replace('sks', 'this subject')
    option_A = options['A']
    option_B = options['B']
    question = prompt + f'{option_A} or {option_B}?'
    image_with_prompt = question +'<image><image><image><image>'
    return image_with_prompt


def yochameleon_vqa_text_prompt_source(caption, question_text, options):
    """baselines/chameleon-qa.py, 'VQA with Text Prompt' (commented out there)."""
    caption = caption.replace('<sks>', 'this subject')
    prompt = question_text.replace('sks', 'this subject')
    option_A = options['A']
    option_B = options['B']
    question = caption + ' ' + prompt + f'{option_A} or {option_B}?'
    return question


def test_yochameleon_image_prompt_visual_question_matches_the_source():
    # The source names the concept <sks>: our token stands in its place on both sides.
    request = formats.build("yochameleon", "<sks>", "", REFS[:1], Question("choice", "", "Is <sks> sitting? ", OPTIONS, TEST_IMAGE))
    assert rendered(request) == [{"role": "user",
                                  "content": yochameleon_vqa_image_prompt_source("Is <sks> sitting? ", dict(OPTIONS))}]
    assert _images(request) == [REFS[0], TEST_IMAGE]


def test_yochameleon_image_prompt_text_question_matches_the_source():
    four = [Path(f"/refs/{i}.png") for i in range(4)]
    request = formats.build("yochameleon", "sks", "", four, Question("choice", "", "What does sks like? ", OPTIONS, None))
    assert rendered(request) == [{"role": "user",
                                  "content": yochameleon_qa_image_prompt_source("What does sks like? ", dict(OPTIONS))}]
    assert _images(request) == four


def test_yochameleon_text_prompt_matches_the_source():
    request = formats.build("yochameleon", "<sks>", "<sks> is a corgi.", [],
                            Question("choice", "", "Is <sks> sitting? ", OPTIONS, TEST_IMAGE))
    # This block of the source replaces a bare 'sks' in questions (the caption's '<sks>'): the question
    # it is given names the concept so; ours names it by its token, which is replaced wherever it is.
    text = yochameleon_vqa_text_prompt_source("<sks> is a corgi.", "Is sks sitting? ", dict(OPTIONS))
    # the source hands the photo to the processor apart from the text: here it comes first
    assert rendered(request) == [{"role": "user", "content": "<image>" + text}]


def test_yochameleon_more_than_two_options_read_a_b_or_c():
    q = Question("choice", "", "Pick: ", (("A", "x"), ("B", "y"), ("C", "z")), None)
    assert formats.yochameleon_question(TOKEN, q) == "Pick: x, y or z?"


# ----------------------------------------------------------------------------------------------- plain
def test_plain_puts_references_description_photo_and_the_harness_question_in_one_turn():
    request = formats.build("plain", TOKEN, DESCRIPTION, REFS[:2], CHOICE)
    assert rendered(request) == [{"role": "user", "content":
                                  "<image><image>These photos show <bo>. <bo> is a corgi with a red collar.\n\n<image>"
                                  + CHOICE.question}]
    assert _images(request) == [*REFS[:2], TEST_IMAGE]
    assert rendered(formats.build("plain", TOKEN, "", [], REC)) == [{"role": "user", "content": "<image>" + REC.question}]


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_every_format_ends_with_a_user_turn_holding_each_image_once(fmt):
    for q in (CHOICE, TEXT_CHOICE, REC):
        refs = [] if fmt == "mmpb" and q is REC else REFS[:2]
        request = formats.build(fmt, TOKEN, "" if fmt == "yochameleon" else DESCRIPTION, refs, q)
        assert request.messages[-1].role == "user"
        assert sorted(map(str, request.images)) == sorted(map(str, refs + ([q.image] if q.image else [])))
