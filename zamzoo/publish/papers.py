"""Papers behind every zoo model, for model cards: the attention's and the backbone's paper (title, link, BibTeX).

Model names, descriptions and paper ids live in the zoo table (zamzoo.models); this file adds the BibTeX."""
from typing import List, NamedTuple, Optional, Tuple


class Paper(NamedTuple):
    title: str
    url: str
    bibtex: str


PAPERS = {
    'resnet': Paper(
        'Deep Residual Learning for Image Recognition', 'https://arxiv.org/abs/1512.03385',
        '@inproceedings{he2016deep,\n'
        '  title={Deep Residual Learning for Image Recognition},\n'
        '  author={He, Kaiming and Zhang, Xiangyu and Ren, Shaoqing and Sun, Jian},\n'
        '  booktitle={Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},\n'
        '  pages={770--778},\n'
        '  year={2016}\n'
        '}'),
    'mobilenet': Paper(
        'MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications',
        'https://arxiv.org/abs/1704.04861',
        '@article{howard2017mobilenets,\n'
        '  title={MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications},\n'
        '  author={Howard, Andrew G. and Zhu, Menglong and Chen, Bo and Kalenichenko, Dmitry and Wang, Weijun'
        ' and Weyand, Tobias and Andreetto, Marco and Adam, Hartwig},\n'
        '  journal={arXiv preprint arXiv:1704.04861},\n'
        '  year={2017}\n'
        '}'),
    'mobilenetv2': Paper(
        'MobileNetV2: Inverted Residuals and Linear Bottlenecks', 'https://arxiv.org/abs/1801.04381',
        '@inproceedings{sandler2018mobilenetv2,\n'
        '  title={MobileNetV2: Inverted Residuals and Linear Bottlenecks},\n'
        '  author={Sandler, Mark and Howard, Andrew and Zhu, Menglong and Zhmoginov, Andrey and Chen, Liang-Chieh},\n'
        '  booktitle={Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},\n'
        '  pages={4510--4520},\n'
        '  year={2018}\n'
        '}'),
    'zam': Paper(
        'ZAM: Zero parameter Attention Module (GitHub repository)', 'https://github.com/developer0hye/ZAM',
        '@misc{developer0hye_zam,\n'
        '  title={ZAM: Zero parameter Attention Module},\n'
        '  author={developer0hye},\n'
        '  howpublished={\\url{https://github.com/developer0hye/ZAM}}\n'
        '}'),
    'ulsam': Paper(
        'ULSAM: Ultra-Lightweight Subspace Attention Module for Compact Convolutional Neural Networks',
        'https://arxiv.org/abs/2006.15102',
        '@inproceedings{saini2020ulsam,\n'
        '  title={ULSAM: Ultra-Lightweight Subspace Attention Module for Compact Convolutional Neural Networks},\n'
        '  author={Saini, Rajat and Jha, Nandan Kumar and Das, Bedanta and Mittal, Sparsh and Mohan, C. Krishna},\n'
        '  booktitle={Proceedings of the IEEE/CVF Winter Conference on Applications of Computer Vision (WACV)},\n'
        '  pages={1627--1636},\n'
        '  year={2020}\n'
        '}'),
    'nam': Paper(
        'NAM: Normalization-based Attention Module', 'https://arxiv.org/abs/2111.12419',
        '@article{liu2021nam,\n'
        '  title={NAM: Normalization-based Attention Module},\n'
        '  author={Liu, Yichao and Shao, Zongru and Teng, Yueyang and Hoffmann, Nico},\n'
        '  journal={arXiv preprint arXiv:2111.12419},\n'
        '  year={2021}\n'
        '}'),
    'spem': Paper(
        'SPEM: Self-adaptive Pooling Enhanced Attention Module for Image Recognition (MMM 2023)',
        'https://doi.org/10.1007/978-3-031-27818-1_4',
        # as given in the README of github.com/Qrange-group/SPEM
        '@inproceedings{zhong2023spem,\n'
        '  title={SPEM: Self-adaptive Pooling Enhanced Attention Module for Image Recognition},\n'
        '  author={Zhong, Shanshan and Wen, Wushao and Qin, Jinghui},\n'
        '  booktitle={MultiMedia Modeling: 29th International Conference, MMM 2023, Bergen, Norway, January 9--12,'
        ' 2023, Proceedings, Part II},\n'
        '  pages={41--53},\n'
        '  year={2023},\n'
        '  organization={Springer}\n'
        '}'),
    'se': Paper(
        'Squeeze-and-Excitation Networks', 'https://arxiv.org/abs/1709.01507',
        '@inproceedings{hu2018squeeze,\n'
        '  title={Squeeze-and-Excitation Networks},\n'
        '  author={Hu, Jie and Shen, Li and Sun, Gang},\n'
        '  booktitle={Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},\n'
        '  pages={7132--7141},\n'
        '  year={2018}\n'
        '}'),
    'eca': Paper(
        'ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks',
        'https://arxiv.org/abs/1910.03151',
        '@inproceedings{wang2020eca,\n'
        '  title={ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks},\n'
        '  author={Wang, Qilong and Wu, Banggu and Zhu, Pengfei and Li, Peihua and Zuo, Wangmeng and Hu, Qinghua},\n'
        '  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},\n'
        '  pages={11534--11542},\n'
        '  year={2020}\n'
        '}'),
    'cbam': Paper(
        'CBAM: Convolutional Block Attention Module', 'https://arxiv.org/abs/1807.06521',
        '@inproceedings{woo2018cbam,\n'
        '  title={CBAM: Convolutional Block Attention Module},\n'
        '  author={Woo, Sanghyun and Park, Jongchan and Lee, Joon-Young and Kweon, In So},\n'
        '  booktitle={Proceedings of the European Conference on Computer Vision (ECCV)},\n'
        '  pages={3--19},\n'
        '  year={2018}\n'
        '}'),
    'bam': Paper(
        'BAM: Bottleneck Attention Module', 'https://arxiv.org/abs/1807.06514',
        '@inproceedings{park2018bam,\n'
        '  title={BAM: Bottleneck Attention Module},\n'
        '  author={Park, Jongchan and Woo, Sanghyun and Lee, Joon-Young and Kweon, In So},\n'
        '  booktitle={British Machine Vision Conference (BMVC)},\n'
        '  year={2018}\n'
        '}'),
    'simam': Paper(
        'SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks',
        'https://proceedings.mlr.press/v139/yang21o.html',
        '@inproceedings{yang2021simam,\n'
        '  title={SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks},\n'
        '  author={Yang, Lingxiao and Zhang, Ru-Yuan and Li, Lida and Xie, Xiaohua},\n'
        '  booktitle={Proceedings of the 38th International Conference on Machine Learning (ICML)},\n'
        '  series={Proceedings of Machine Learning Research},\n'
        '  volume={139},\n'
        '  pages={11863--11874},\n'
        '  year={2021}\n'
        '}'),
}

BACKBONE_PAPER = {
    'resnet18': 'resnet', 'resnet34': 'resnet', 'resnet50': 'resnet', 'resnet164': 'resnet',
    'mobilenet': 'mobilenet', 'mobilenetv2': 'mobilenetv2',
}
ATTN_PAPER = {
    'plain': None, 'zam': 'zam', 'zam_avg': 'zam', 'zam_max': 'zam', 'zamr': 'zam', 'ulsam': 'ulsam',
    'nam': 'nam', 'spem': 'spem', 'se': 'se', 'eca': 'eca', 'cbam': 'cbam', 'bam': 'bam', 'simam': 'simam',
}
DATASETS = {
    # tag -> (display name, Hugging Face dataset id)
    'cifar100': ('CIFAR-100', 'uoft-cs/cifar100'),
    'cifar10': ('CIFAR-10', 'uoft-cs/cifar10'),
}


def split_model_name(model: str) -> Tuple[str, str]:
    """'resnet18_zam_avg' -> ('resnet18', 'zam_avg'), from the zoo table. ValueError for a name outside the zoo."""
    from ..models import ZOO
    entry = ZOO.get(model.split('.', 1)[0])
    if entry is None:
        raise ValueError(f"'{model}' is not a zamzoo model; see zamzoo.list_models()")
    return entry.backbone.name, entry.attention.name


def describe(model: str) -> str:
    """'ResNet-18 for 32x32 inputs (...) with ZAM (avg & max pooling), in every block' from the zoo table."""
    from ..models import ZOO
    entry = ZOO[model.split('.', 1)[0]]
    attn = entry.attention
    return entry.backbone.description + (' without attention' if attn.layer is None else f' with {attn.description}')


def model_papers(model: str) -> List[Paper]:
    """The attention's paper (if any) first, then the backbone's."""
    backbone, attn = split_model_name(model)
    keys = [ATTN_PAPER[attn], BACKBONE_PAPER[backbone]]
    return [PAPERS[k] for k in keys if k is not None]


def dataset_names(tag: str) -> Tuple[str, Optional[str]]:
    return DATASETS.get(tag, (tag, None))
