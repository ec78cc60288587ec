import random

import pytest
from corpus import WORDS_EN, WORDS_FR
from sentencepiece import sentencepiece_model_pb2

from nmt.config import SpmModelType, TokenizerConfig
from nmt.errors import NmtError
from nmt.tokenizer import Tokenizer, train_sentencepiece
from nmt.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID

EN, FR = WORDS_EN, WORDS_FR


def sentences(words: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def joint(tmp_path_factory) -> Tokenizer:
    cfg = TokenizerConfig(vocab_size=120, trim_vocab=False)
    return Tokenizer.train(
        sentences(EN, 300, 1), sentences(FR, 300, 2), cfg, tmp_path_factory.mktemp("joint")
    )


def test_fixed_special_ids_and_pieces(joint):
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert joint.tgt_pieces([0, 1, 2, 3]) == ["<pad>", "<unk>", "<s>", "</s>"]
    assert joint.joint and joint.src_vocab_size == joint.tgt_vocab_size <= 120


def test_round_trip_without_specials(joint):
    lines = ["une femme voit la rivière", "le vieux homme donne le pain", "grand"]
    ids = joint.encode_tgt(lines)
    assert all(ids) and not any(i in (PAD_ID, BOS_ID, EOS_ID) for seq in ids for i in seq)
    assert [joint.decode_tgt(seq) for seq in ids] == lines
    assert joint.decode_tgt([BOS_ID, *ids[0], EOS_ID, PAD_ID, PAD_ID]) == lines[0]
    src = joint.encode_src(["the old man sees the river"])[0]
    assert joint.decode_src(src) == "the old man sees the river"
    assert "".join(joint.src_pieces(src)).replace("▁", " ").strip() == "the old man sees the river"


def test_unknown_characters_map_to_unk(joint):
    ids = joint.encode_src(["the 漢 house"])[0]
    assert UNK_ID in ids
    assert joint.decode_src(ids) == "the ⁇ house"


def test_load_gives_the_same_tokenizer(joint):
    model_dir = joint.files[0].parent
    again = Tokenizer.load(model_dir)
    assert again.fingerprint() == joint.fingerprint()
    assert again.encode_src(["the small house"]) == joint.encode_src(["the small house"])
    assert Tokenizer.saved_config(model_dir) == Tokenizer.config_dict(
        TokenizerConfig(vocab_size=120, trim_vocab=False)
    )


def test_separate_models_per_side(tmp_path):
    cfg = TokenizerConfig(vocab_size=60, joint=False, model_type=SpmModelType.bpe)
    tok = Tokenizer.train(sentences(EN, 200, 3), sentences(FR, 200, 4), cfg, tmp_path)
    assert not tok.joint
    assert sorted(p.name for p in tmp_path.glob("*.model")) == ["spm.src.model", "spm.tgt.model"]
    assert tok.decode_tgt(tok.encode_tgt(["la petite maison"])[0]) == "la petite maison"
    assert Tokenizer.load(tmp_path).joint is False


def test_tiny_corpus_gives_a_smaller_vocabulary(tmp_path):
    sp = train_sentencepiece(["abc abd", "abc"] * 20, tmp_path / "tiny", TokenizerConfig(vocab_size=8000))
    assert sp.get_piece_size() < 100 and sp.pad_id() == PAD_ID and sp.eos_id() == EOS_ID
    assert (tmp_path / "tiny.model").is_file()


def test_train_sentencepiece_follows_the_config(tmp_path):
    cfg = TokenizerConfig(vocab_size=40, model_type=SpmModelType.bpe, character_coverage=0.99)
    train_sentencepiece(sentences(EN, 100, 6), tmp_path / "bpe", cfg)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((tmp_path / "bpe.model").read_bytes())
    spec = proto.trainer_spec
    assert spec.model_type == sentencepiece_model_pb2.TrainerSpec.BPE and spec.vocab_size == 40
    assert spec.character_coverage == pytest.approx(0.99)
    assert spec.input_sentence_size == cfg.input_sentence_size


def test_training_errors_are_clear(tmp_path):
    with pytest.raises(NmtError, match="no training sentences"):
        train_sentencepiece(["", ""], tmp_path / "empty", TokenizerConfig(vocab_size=50))
    with pytest.raises(NmtError, match="vocab_size=10"):
        train_sentencepiece(sentences(EN, 50, 5), tmp_path / "small", TokenizerConfig(vocab_size=10))


def test_load_errors_name_the_directory(tmp_path):
    with pytest.raises(NmtError, match="no tokenizer"):
        Tokenizer.load(tmp_path)
    (tmp_path / "spm.model").write_bytes(b"not a model")
    with pytest.raises(NmtError, match="spm.model"):
        Tokenizer.load(tmp_path)
    (tmp_path / "spm.model").unlink()
    (tmp_path / "spm.src.model").write_bytes(b"x")
    with pytest.raises(NmtError, match="need spm.tgt.model"):
        Tokenizer.load(tmp_path)


def test_trimmed_joint_model_keeps_each_sides_own_pieces(tmp_path, joint):
    en, fr = sentences(EN, 300, 1), sentences(FR, 300, 2)  # the `joint` fixture's corpus
    tok = Tokenizer.train(en, fr, TokenizerConfig(vocab_size=120, trim_vocab=True), tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.model")) == ["spm.src.model", "spm.tgt.model"]
    assert tok.trimmed and tok.joint and not joint.trimmed
    chars = {p for p in joint.tgt_pieces(range(4, joint.tgt_vocab_size)) if len(p) == 1}
    fr_pieces = {p for seq in joint.encode_tgt(fr) for p in joint.tgt_pieces(seq)} | chars
    en_pieces = {p for seq in joint.encode_src(en) for p in joint.src_pieces(seq)} | chars
    assert tok.tgt_vocab_size == 4 + len(fr_pieces) < joint.tgt_vocab_size
    assert tok.src_vocab_size == 4 + len(en_pieces) < joint.src_vocab_size
    assert tok.tgt_pieces([0, 1, 2, 3]) == ["<pad>", "<unk>", "<s>", "</s>"]
    # Training text segments exactly as with the joint model, in the dense id space.
    ids = tok.encode_tgt(fr[:50])
    assert [tok.tgt_pieces(s) for s in ids] == [joint.tgt_pieces(s) for s in joint.encode_tgt(fr[:50])]
    assert max(max(s) for s in ids) < tok.tgt_vocab_size and [tok.decode_tgt(s) for s in ids] == fr[:50]
    # A word from the other side is spelled with this side's pieces, never with an id outside the vocabulary.
    english = tok.encode_tgt(["the woman"])[0]
    assert max(english) < tok.tgt_vocab_size and tok.decode_tgt(english) == "the woman"
    again = Tokenizer.load(tmp_path)
    assert (again.src_vocab_size, again.tgt_vocab_size) == (tok.src_vocab_size, tok.tgt_vocab_size)
    assert again.encode_tgt(fr[:5]) == tok.encode_tgt(fr[:5])


def test_sampled_segmentations_spell_the_line(tmp_path, joint):
    line = "une femme voit la rivière et le vieux homme donne le pain"
    best = joint.encode_tgt([line])[0]
    drawn = {tuple(ids) for ids in joint.sample_tgt([line] * 20, alpha=0.1)}
    assert all(joint.decode_tgt(ids) == line for ids in drawn)
    assert len(drawn) > 2 and any(list(ids) != best for ids in drawn)
    # A trimmed side samples among its own pieces only, in its dense id space.
    fr = sentences(FR, 300, 2)
    trimmed = Tokenizer.train(sentences(EN, 300, 1), fr, TokenizerConfig(vocab_size=120), tmp_path)
    samples = trimmed.sample_tgt(fr[:50], alpha=0.1)
    assert max(max(s) for s in samples) < trimmed.tgt_vocab_size
    assert [trimmed.decode_tgt(s) for s in samples] == fr[:50]
    assert samples != trimmed.encode_tgt(fr[:50])
